"""Where a model lives, and a guard that fails loudly when a batch is fed from somewhere else.

Why: a task that moved only its head to the GPU, or a probe built with a CPU tensor, used to crash deep
inside a matmul with a message naming neither the module nor the fix. Every task now moves its models in
one place (``place_models``), probes ask ``module_device``, and while a unit runs a forward pre-hook checks
each input's device against the module's parameters. The hook is also what lets a CPU-only test catch a
mismatch: a module on the ``meta`` device fed a CPU tensor trips it exactly as CUDA vs CPU would.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from saip_bench.errors import SaipBenchError


class DeviceMismatchError(SaipBenchError):
    """A tensor reached a module that lives on another device."""


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); CPU for a module without either."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _same_place(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.type != "cuda" or (a.index or 0) == (b.index or 0)


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``value`` (nested lists, tuples, dict values), in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def check_inputs(name: str, module: nn.Module, inputs: Iterable[Any]) -> None:
    """Raise ``DeviceMismatchError`` when a tensor in ``inputs`` is not on ``module``'s device."""
    where = module_device(module)
    for tensor in tensors_in(list(inputs)):
        if not _same_place(tensor.device, where):
            raise DeviceMismatchError(
                f"{name} ({type(module).__name__}) lives on {where} but got a tensor of shape "
                f"{tuple(tensor.shape)} on {tensor.device}: move the batch with .to({str(where)!r}) "
                "(models are placed by saip_bench.devices.place_models)"
            )


@contextlib.contextmanager
def device_guard(**modules: nn.Module) -> Iterator[None]:
    """While the block runs, the first call of every parameter-holding submodule of the named modules
    checks its inputs' devices (tasks call ``forward_features``/``losses`` directly, so a hook on the top
    module alone would never fire). One check per submodule and block keeps the cost out of the step."""
    handles: list[Any] = []
    handles_by_module: dict[int, Any] = {}
    for name, root in modules.items():
        for sub_name, module in root.named_modules():
            if next(module.parameters(recurse=False), None) is None or id(module) in handles_by_module:
                continue
            label = f"{name}.{sub_name}" if sub_name else name

            def hook(mod: nn.Module, args: tuple, kwargs: dict, _label: str = label) -> None:
                check_inputs(_label, mod, (args, kwargs))
                handles_by_module.pop(id(mod)).remove()  # checked once: out of the hot path

            handle = module.register_forward_pre_hook(hook, with_kwargs=True)
            handles_by_module[id(module)] = handle
            handles.append(handle)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor inside (lists, tuples, dicts) moved to ``device``, without a host sync.

    Why: detection targets (boxes, labels, masks per image) travel beside the batch as lists of dicts;
    torchvision's matchers then compare them with anchors built on the feature maps' device."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list):
        return [to_device(item, device) for item in value]
    if isinstance(value, tuple):
        return tuple(to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host tensor built during a step (labels gathered by index, drawn masks) on ``device`` without
    stopping the host: pinned first on a GPU, so the copy is queued behind the device's work. Why: a plain
    ``.to(device)`` of pageable memory waits until the device has drained its queue, once per copy. The
    same values; on the host nothing moves."""
    device = torch.device(device)
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@functools.lru_cache(maxsize=64)
def constant(values: tuple, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, built once per (values, device, dtype) and shared: read it,
    never write it. Why: a constant built from Python numbers in every step was a blocking copy per step
    on a GPU (normalisation statistics, colour matrices)."""
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor even if first asked in inference
        return torch.tensor(values, dtype=dtype, device=device)


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1], bit-identical to the CPU's ``images.float() / 255``.

    Why a tensor divisor on the images' device (built once, ``devices.constant``, so no copy per step):
    CUDA divides by a CPU scalar as a multiplication by its reciprocal, which can be one ulp off the true
    quotient the CPU pipeline computed."""
    return images.float().div_(constant((255.0,), images.device))


def packed_to_device(tensors: Sequence[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """Small host tensors of one dtype on ``device`` in one queued copy (``host_to_device`` of their
    concatenation, split again there): one copy call per step instead of one per tensor."""
    if len({tensor.dtype for tensor in tensors}) != 1:
        dtypes = sorted({str(tensor.dtype) for tensor in tensors})
        raise ValueError(f"packed_to_device: one dtype expected, got {dtypes}")
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
    parts = host_to_device(flat, device).split([tensor.numel() for tensor in tensors])
    return [part.view(tensor.shape) for part, tensor in zip(parts, tensors, strict=True)]


def speed_settings(device: torch.device | str, compiled: bool = False) -> dict[str, bool]:
    """The speed switches a run on ``device`` uses, as recorded in provenance: on a GPU, TF32 for float32
    matmuls and convolutions (bf16 autocast covers the rest), fused AdamW, channels_last ConvNets; on any
    device, ``torch.compile`` of the backbone's blocks when asked (``--compile``; off by default: on our
    CPUs it cost 30-40 s of warm-up for no measurable gain)."""
    cuda = torch.device(device).type == "cuda"
    return {"tf32": cuda, "fused_adamw": cuda, "channels_last_convnets": cuda, "compile": bool(compiled)}


def enable_speed(device: torch.device | str) -> dict[str, bool]:
    """Turn on ``speed_settings(device)``'s process-wide switches (TF32); returns the settings."""
    settings = speed_settings(device)
    if settings["tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return settings


def place_models(device: torch.device | str, *modules: nn.Module) -> None:
    """Move every module of a unit (backbone, head, necks) to ``device``: the one place this happens.
    On a GPU a ConvNet/hybrid backbone also goes channels_last (cuDNN's fast layout; ViTs gain nothing)."""
    device = torch.device(device)
    for module in modules:
        module.to(device)
        if speed_settings(device)["channels_last_convnets"] and getattr(module, "family", "vit") != "vit":
            module.to(memory_format=torch.channels_last)


COMPILE_BACKEND_ENV = "SAIP_COMPILE_BACKEND"  # torch.compile backend; default inductor (tests: eager)


def compile_backbone(backbone: nn.Module) -> int:
    """``torch.compile`` a backbone's repeated blocks in place (regional compilation); returns how many.

    Why the blocks and not the model: tasks reach the backbone through several entry points
    (``forward_features``, ``intermediate``, heads' probes), which all run through the blocks; compiling in
    place keeps every parameter name (checkpoints, EMA teachers, DDP, exports unchanged); and identical
    blocks share one compiled graph, so the warm-up is one block's, not the whole network's. The backend is
    ``$SAIP_COMPILE_BACKEND`` (default ``inductor``).
    """
    import os

    body = getattr(backbone, "body", backbone)
    regions = getattr(body, "blocks", None)
    if regions is None or len(regions) == 0:
        regions = getattr(body, "stages", None)
    if regions is None or len(regions) == 0:
        from saip_bench.errors import UserError

        raise UserError(f"--compile: {type(body).__name__} has neither 'blocks' nor 'stages' to compile")
    backend = os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
    for block in regions:
        block.compile(backend=backend)
    return len(regions)


COMPILE_MODE_ENV = "SAIP_COMPILE_MODE"  # torch.compile mode of ``compile: step`` (e.g. reduce-overhead)
COMPILE_SCOPES = ("blocks", "step")


def compile_scope(setting: bool | str | None) -> str | None:
    """What a ``compile`` setting compiles: ``None`` (off), ``"blocks"`` (``true``) or ``"step"``."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return "blocks"
    if setting not in COMPILE_SCOPES:
        from saip_bench.errors import UserError

        raise UserError(f"compile: {setting!r} is none of true, false, {', '.join(COMPILE_SCOPES)}")
    return str(setting)


def compile_step(method: nn.Module) -> None:
    """``torch.compile`` a pretraining method's whole ``forward`` in place: backbone passes, heads, losses
    and the teacher's pass, so inductor fuses the element-wise work around the matrix products and
    AOTAutograd compiles the backward as one graph too.

    Why beyond the blocks: a ViT-Tiny step is host-bound, one eager op at a time (the roofline in
    docs/performance.md, "How high can pretraining MFU go?"): an eager SAIP step cannot pass ~27 % MFU
    however good its kernels, fused it could reach ~75 %. Every method's forward traces as one graph
    (SOLIDER: two, split at its one data-dependent shape) that is not recompiled from step to step
    (tests/test_compile.py; DINO and SOLIDER once, when their frozen last layer is released), so the
    compilation is paid once. The trainer prepares the views (``compiled_step_inputs``); making them stays
    eager (numpy draws per sample). Compiling in place keeps every parameter name. Under DDP, dynamo splits
    the graph at the gradient buckets as usual, so their all-reduce can overlap the backward (the
    position-embedding resample keeps that working: vit.resample_weights). Backend
    ``$SAIP_COMPILE_BACKEND`` (default inductor), mode ``$SAIP_COMPILE_MODE`` (default: torch's;
    ``reduce-overhead`` adds CUDA graphs); inductor gets that mode's options with its layout optimisation
    off (``step_compile_options``).
    """
    import os

    backend = os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
    mode = os.environ.get(COMPILE_MODE_ENV) or None
    if backend != "inductor":
        method.compile(backend=backend, mode=mode)
        return
    method.compile(backend=backend, options=step_compile_options(mode))


def step_compile_options(mode: str | None) -> dict[str, Any]:
    """Inductor's options for a compiled step: those of torch.compile ``mode``, without layout optimisation.

    Why: on a CPU inductor makes every convolution channels-last whatever the shapes
    (``GraphLowering.decide_layout_opt``), and the backward graph then takes the forward's concrete strides.
    With SAIP's rescaled views dynamic, a later size pair recompiled the step, or ran the first pair's
    backward and failed its stride check (torch 2.13, this project's CPU, bf16 and fp32 alike). On CUDA
    the same heuristic already leaves it off for graphs like these (dynamic convolutions, one patch
    convolution per view among thousands of nodes), so the option changes nothing there.
    """
    import torch._inductor

    return {**torch._inductor.list_mode_options(mode or "default"), "layout_optimization": False}


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (every frame and every recompilation).

    Why: a compiled step that recompiles pays the compilation again at that step; the trainer logs this
    count (``compile/graphs``) so a run and ``benchmarks/gpu_check.py`` see which steps compiled."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def recompile_limit() -> int:
    """Dynamo's graphs per function; past it a function silently runs eager (its config key was renamed)."""
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def compiled_step_inputs(views: dict[str, Any], dynamic_dims: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """A method's views made ready for its compiled step (``compile: step``): every tensor contiguous, and
    the dimensions the method declares as varying from step to step marked dynamic (SAIP's rescaled
    views take one of 4 x 4 sizes): one graph from the first step, where dynamo alone compiled a second
    one when it first saw the sizes vary (tests/test_compile.py: 2 graphs in 4 steps without this)."""
    views = contiguous_tensors(views)
    for key, dims in dynamic_dims.items():
        if isinstance(views.get(key), torch.Tensor):
            for dim in dims:
                torch._dynamo.maybe_mark_dynamic(views[key], dim)
    return views


def contiguous_tensors(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples of tensors and other values) with every tensor contiguous.

    Why: a compiled step guards on its inputs' strides, and a view's layout depends on which augmentations
    its batch drew (a broadcast ``where`` keeps the layout of its widest input): without this, a step whose
    grayscale draw differed recompiled. A contiguous tensor is returned as is."""
    if isinstance(tree, torch.Tensor):
        return tree.contiguous()
    if isinstance(tree, dict):
        return {key: contiguous_tensors(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(contiguous_tensors(value) for value in tree)
    return tree


def fused_optimizer_ok(groups: Iterable[dict[str, Any]]) -> bool:
    """Whether torch's fused AdamW/Adam kernel applies: every parameter on a CUDA device."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_cuda for p in params)
