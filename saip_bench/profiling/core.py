"""Cost measurements that sit beside accuracy on the boards.

Why: the paper's case is edge deployment of ~5M models; a user choosing a backbone needs parameters,
FLOPs, memory and latency measured the same way for every candidate, on the engines they deploy with.
Latency is the median of repeated timed runs after warm-up; the spread (p25/p75) is kept because
run-to-run noise on small CPUs is around ±15%.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from saip_bench.backbones import Backbone, count_parameters, create_backbone, flops
from saip_bench.errors import UserError

ENGINES = ("eager", "eager_bf16", "compile", "onnxruntime")


class FeatureOutputs(nn.Module):
    """Backbone as an exportable graph: image -> (global feature, feature map)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(image)
        return features["cls"], features["fmap"]


def _outputs_tuple(result: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, dict):
        return tuple(result[k] for k in sorted(result))
    return tuple(result)


def export_onnx(model: nn.Module, img_size: tuple[int, int], path: str | Path, opset: int = 17) -> Path:
    """Export with a dynamic batch axis (TorchScript-based exporter; no onnxscript needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.zeros(1, 3, *img_size)
    with torch.no_grad():
        n_outputs = len(_outputs_tuple(model(example)))
    output_names = [f"output_{i}" for i in range(n_outputs)]
    dynamic_axes = {"image": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with warnings_silenced():
        torch.onnx.export(
            model, (example,), str(path), input_names=["image"], output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
        )
    model.eval()  # the exporter restores the *original* mode, which re-enables training in submodules
    return path


@contextlib.contextmanager
def warnings_silenced():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_max_abs_diff(model: nn.Module, path: str | Path, img_size: tuple[int, int], batch: int = 2,
                      seed: int = 0) -> float:
    """Largest absolute difference between PyTorch (eval, fp32) and ONNX Runtime outputs."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, *img_size, generator=generator)
    with torch.no_grad():
        reference = _outputs_tuple(model(image))
    session = _ort_session(Path(path), torch.get_num_threads())
    outputs = session.run(None, {"image": image.numpy()})
    return float(max(np.abs(o - r.numpy()).max() for o, r in zip(outputs, reference, strict=True)))


def measure_latency(run: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Median / p25 / p75 wall time of ``run()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": quartiles[0], "p75_ms": quartiles[2]}


def _current_rss_bytes() -> int:
    """Resident set size now (Linux /proc), falling back to the high-water mark elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_child(builder: Callable[[], nn.Module], img_size: tuple[int, int], batch: int,
                queue: Any) -> None:
    import threading

    torch.set_num_threads(1)
    model = builder().eval()
    image = torch.rand(batch, 3, *img_size)
    baseline = _current_rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _current_rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with torch.no_grad():
        model(image)
    done.set()
    sampler.join()
    queue.put((baseline, max(peak[0], _current_rss_bytes())))


def peak_memory_mib(
    builder: Callable[[], nn.Module], img_size: tuple[int, int], batch: int
) -> dict[str, float]:
    """Resident memory in a fresh process: with the model loaded, and the sampled peak during a forward.

    A fresh process (spawn) keeps other models' allocations out of the figure; RSS is sampled every
    0.5 ms while the forward runs. On CUDA read ``torch.cuda.max_memory_allocated`` instead; this is
    the CPU/edge figure.
    """
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(builder, img_size, batch, queue))
    process.start()
    process.join(timeout=600)
    if process.exitcode != 0:
        raise RuntimeError(f"memory probe exited with {process.exitcode}")
    baseline, peak = queue.get(timeout=5)
    mib = 1024.0 * 1024.0
    return {"rss_model_mib": baseline / mib, "rss_peak_mib": peak / mib,
            "forward_extra_mib": max(0, peak - baseline) / mib}


@dataclass
class ProfileResult:
    name: str
    img_size: tuple[int, int]
    params: int
    flops: int
    threads: int
    latency: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # engine -> batch -> stats
    memory: dict[str, float] = field(default_factory=dict)
    onnx_max_abs_diff: float | None = None
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["img_size"] = list(self.img_size)
        data["gflops"] = self.flops / 1e9
        data["params_m"] = self.params / 1e6
        return data

    def scores(self) -> dict[str, float]:
        """Flat numbers for a cost record (one key per engine and batch)."""
        out = {"params_m": self.params / 1e6, "gflops": self.flops / 1e9}
        for engine, by_batch in self.latency.items():
            for batch, stats in by_batch.items():
                out[f"latency_ms_{engine}_b{batch}"] = stats["median_ms"]
                out[f"throughput_{engine}_b{batch}"] = 1000.0 * int(batch) / stats["median_ms"]
        out.update({f"memory_{k}": v for k, v in self.memory.items()})
        return out


def _environment() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "processor": platform.processor() or platform.machine(), "python": platform.python_version()}


def profile_model(
    name: str,
    model_builder: Callable[[], nn.Module],
    img_size: tuple[int, int],
    batches: Sequence[int] = (1, 32),
    engines: Sequence[str] = ("eager", "eager_bf16", "onnxruntime"),
    warmup: int = 3,
    repeats: int = 10,
    memory: bool = True,
) -> ProfileResult:
    """Profile ``model_builder()`` (a module mapping images to tensors) on this CPU."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise UserError(f"unknown engine(s) {unknown}; known: {', '.join(ENGINES)}")
    model = model_builder().eval()
    result = ProfileResult(
        name=name, img_size=tuple(img_size), params=count_parameters(model),
        flops=flops(model, tuple(img_size)), threads=torch.get_num_threads(), environment=_environment(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = None
        if "onnxruntime" in engines:
            onnx_path = export_onnx(model, img_size, Path(tmp) / "model.onnx")
            result.onnx_max_abs_diff = onnx_max_abs_diff(model, onnx_path, img_size)
            session = _ort_session(onnx_path, torch.get_num_threads())
        compiled = torch.compile(model) if "compile" in engines else None
        for engine in engines:
            result.latency[engine] = {}
            for batch in batches:
                image = torch.rand(batch, 3, *img_size)
                if engine == "onnxruntime":
                    array = image.numpy()

                    def run(array: np.ndarray = array) -> Any:
                        return session.run(None, {"image": array})
                elif engine == "eager_bf16":
                    def run(image: torch.Tensor = image) -> Any:
                        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                            return model(image)
                else:
                    target = compiled if engine == "compile" else model

                    def run(image: torch.Tensor = image, target: nn.Module = target) -> Any:
                        with torch.no_grad():
                            return target(image)
                result.latency[engine][str(batch)] = measure_latency(run, warmup, repeats)
    if memory:
        result.memory = peak_memory_mib(model_builder, img_size, max(batches))
    return result


def backbone_builder(name: str, img_size: tuple[int, int], checkpoint: str | None = None
                     ) -> Callable[[], nn.Module]:
    """A picklable builder (for the spawn memory probe) of a backbone's export graph."""
    return _BackboneBuilder(name, tuple(img_size), checkpoint)


@dataclass(frozen=True)
class _BackboneBuilder:
    name: str
    img_size: tuple[int, int]
    checkpoint: str | None

    def __call__(self) -> nn.Module:
        if self.checkpoint:
            from saip_bench.pretrain.export import load_backbone

            backbone = load_backbone(self.checkpoint)
        else:
            backbone = create_backbone(self.name, img_size=self.img_size)
        return FeatureOutputs(backbone)
