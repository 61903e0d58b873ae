"""Make ``import torchvision`` (and so ``import timm``) work with the CPU-only torch wheel.

Why: the only torchvision that accepts torch 2.13.0 is a CUDA build. Its C extension cannot load
against the CPU torch, and ``torchvision/_meta_registrations.py`` then registers fake kernels for
``torchvision::nms``/``qnms`` schemas that were never defined, so the import raises. We define the two
schemas (plus a pure-torch CPU ``nms``) *before* torchvision is imported, and only when its C
extension really fails to load. Machines where torchvision works are left untouched.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_STATE: dict[str, object] = {"patched": False, "library": None}


def _extension_loads() -> bool:
    """Try to load torchvision's own ``_C`` extension without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to fix
    package_dir = next(iter(spec.submodule_search_locations))
    candidates = glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(
        os.path.join(package_dir, "_C*.pyd")
    )
    if not candidates:
        return False
    try:
        torch.ops.load_library(candidates[0])
    except (OSError, ImportError, RuntimeError):
        return False
    return True


def nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain torch: indices kept, by decreasing score."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True, stable=True)
    xx1 = torch.maximum(x1[:, None], x1[None, :])
    yy1 = torch.maximum(y1[:, None], y1[None, :])
    xx2 = torch.minimum(x2[:, None], x2[None, :])
    yy2 = torch.minimum(y2[:, None], y2[None, :])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    iou = inter / (areas[:, None] + areas[None, :] - inter).clamp(min=1e-12)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep: list[int] = []
    for index in order.tolist():
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= iou[index] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def register_missing_schemas() -> bool:
    """Before torchvision is imported: define ``torchvision::nms``/``qnms`` (and a CPU ``nms``) if its C
    extension cannot load. Returns True when it did (the Python ``nms`` must then be re-routed)."""
    if _STATE["patched"]:
        return True
    if _extension_loads():
        return False
    library = torch.library.Library("torchvision", "DEF")  # kept alive in _STATE
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms", nms_cpu, "CPU")
    _STATE["library"] = library
    _STATE["patched"] = True
    return True


def ensure_torchvision_importable() -> bool:
    """Register the missing operator schemas if needed and import torchvision now. Returns True when a
    patch was applied. (``import saip_bench`` instead arranges this for torchvision's first import.)"""
    if "torchvision" in sys.modules:
        return bool(_STATE["patched"])
    if not register_missing_schemas():
        return False
    route_python_nms_to_cpu_kernel()
    return True


def route_python_nms_to_cpu_kernel() -> None:
    """torchvision's Python ``nms`` asserts the C extension; point it (and ``batched_nms``) at ours."""
    import torchvision.ops
    import torchvision.ops.boxes as boxes

    def nms(boxes_: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        return torch.ops.torchvision.nms(boxes_, scores, iou_threshold)

    boxes.nms = nms
    torchvision.ops.nms = nms
