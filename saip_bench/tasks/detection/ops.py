"""torchvision ops on the CPU-only torch: route ``roi_align`` to its eager pure-PyTorch kernel.

Why: without torchvision's C extension, ``torchvision.ops.roi_align`` falls back to a pure-PyTorch kernel
wrapped in ``torch.compile(dynamic=True)``; on our CPUs the first call compiles for tens of seconds and
shape changes recompile (a tiny Mask R-CNN step took minutes). The same function run eagerly is exact
and fast enough at our sizes. NMS is already routed to a pure-torch kernel by ``saip_bench._compat``.
"""

from __future__ import annotations

import importlib

from torchvision.extension import _has_ops

# ``torchvision.ops.roi_align`` the attribute is the function; the module holds the fallback
roi_align_module = importlib.import_module("torchvision.ops.roi_align")


def use_eager_roi_align() -> bool:
    """Replace the lazily compiled fallback by its eager original; True when a change was made."""
    if _has_ops():  # a working C extension: torchvision uses its own kernel, nothing to do
        return False
    fallback = roi_align_module._roi_align
    eager = getattr(fallback, "__wrapped__", None)
    if eager is None:
        return False
    roi_align_module._roi_align = eager
    return True


use_eager_roi_align()
