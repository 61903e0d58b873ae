"""``saip-bench data keypoints POOL --checkpoint POSE_MODEL``: pseudo-label a pretraining pool for HAP.

Why: HAP's masking reads 17 COCO keypoints per image from ``POOL/keypoints.json``; a real pool (LUP1M, a
million person crops) comes without them. The HAP authors ran a COCO-trained pose estimator (ViTPose)
over LUPerson; here the estimator is a pose model fine-tuned by this project on COCO keypoints and kept
with ``--keep-finetuned`` (backbone safetensors + JSON sidecar + head safetensors, ``tasks/base.py``).

How: each pool image is one person box (the whole crop), cropped and decoded exactly as the pose task
predicts (mmpose's ``TopdownAffine`` and the unit's heatmap codec, flip test when the unit used it),
batched through a ``torch.utils.data.DataLoader`` (workers decode and crop, pinned memory on a GPU). The
pool is listed by its pool index. Results are written in chunks of a fixed number of images (atomically)
under ``POOL/.saip-index/keypoints-partial/``; a rerun continues after the last complete chunk, and a
changed pool, checkpoint or setting is named instead of mixed in. The finished file goes through the one
writer (``keypoint_file.write_keypoints``), with provenance; the partial results are then removed.

Determinism: the file is a function of the pool's images, the checkpoint and the settings, which include
the batch size, device type and precision (bf16 results depend on the batch's composition in the last
bits, so a resume must keep them: a change is named, never mixed in); chunk boundaries do not depend on the
batch size. The date in the provenance is the first start of the labelling (``SOURCE_DATE_EPOCH`` when
set, the reproducible-builds convention), so a resumed run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from saip_bench.errors import DataFormatError, UserError
from saip_bench.pretrain.keypoint_file import (
    FORMAT,
    NUM_KEYPOINTS,
    keypoints_path,
    read_provenance,
    write_keypoints,
)

log = logging.getLogger(__name__)

# Which kept tasks are pose models, and their keypoint layout (mmpose meta name).
POSE_TASKS = {"pose": "coco", "wholebody": "coco_wholebody"}
CHUNK_SIZE = 4096  # images per partial-result file
MAX_UNREADABLE_FRACTION = 0.01  # as the pool index: more unreadable images than this means a wrong pool
PARTIAL_DIR = ("keypoints-partial",)
STATE_FILE = "state.json"
XY_DECIMALS, SCORE_DECIMALS = 1, 3  # 0.1 px is far below a 16-px patch; a file of 1M images stays compact
KEPT_HINT = ("a pose model kept by --keep-finetuned from a COCO keypoints unit "
             "(finetuned_backbone.safetensors + finetuned_backbone.json + finetuned_head.safetensors, "
             "or their folder)")


# ---- the checkpoint ----------------------------------------------------------------------------------

@dataclass
class PoseCheckpoint:
    """A kept pose model, checked: its files, sidecar, head weights and how it predicts."""

    backbone_path: Path
    head_path: Path
    sidecar: dict[str, Any]
    head_state: dict[str, torch.Tensor]
    pose: dict[str, Any] | None  # the unit's prediction settings (None: kept before they were recorded)

    @property
    def identity(self) -> dict[str, Any]:
        from saip_bench.utils import file_sha256

        return {"backbone_sha256": file_sha256(self.backbone_path),
                "head_sha256": file_sha256(self.head_path),
                "arch": self.sidecar.get("arch"), "spec": self.sidecar.get("spec"),
                "protocol": self.sidecar.get("protocol"), "seed": self.sidecar.get("seed"),
                "selection": self.sidecar.get("selection")}


def find_pose_checkpoint(path: str | Path) -> PoseCheckpoint:
    """Check that ``path`` is a kept COCO-17 pose model; every refusal names the file and the field."""
    from safetensors.torch import load_file

    from saip_bench.pretrain.export import read_sidecar, sidecar_path
    from saip_bench.tasks.base import FINETUNED_BACKBONE

    path = Path(path)
    backbone_path = path / FINETUNED_BACKBONE if path.is_dir() else path
    if backbone_path.suffix == ".json":
        backbone_path = backbone_path.with_suffix(".safetensors")
    if not backbone_path.is_file():
        raise DataFormatError(backbone_path, KEPT_HINT, "nothing at that path")
    side = sidecar_path(backbone_path)
    sidecar = read_sidecar(backbone_path)
    if sidecar.get("source") != "finetuned":
        what = (f"method {sidecar['method']!r}: a pretraining export" if "method" in sidecar
                else "not a fine-tuned model")
        raise DataFormatError(side, f"{KEPT_HINT}: field 'source' = 'finetuned'",
                              f"'source' = {sidecar.get('source')!r} ({what})")
    task = sidecar.get("task")
    if task not in POSE_TASKS:
        raise DataFormatError(side, f"a pose model: field 'task' one of {sorted(POSE_TASKS)}",
                              f"'task' = {task!r} (spec {sidecar.get('spec')!r}): not a pose model")
    pose = sidecar.get("pose")
    if pose is not None and int(pose.get("num_keypoints", -1)) != NUM_KEYPOINTS:
        raise DataFormatError(side, f"field 'pose.num_keypoints' = {NUM_KEYPOINTS} (COCO-17, what HAP reads)",
                              f"{pose.get('num_keypoints')} (layout {pose.get('layout')!r})")
    head_path = side.parent / str(sidecar.get("head", ""))
    if not sidecar.get("head") or not head_path.is_file():
        raise DataFormatError(side, "field 'head' naming the head weights beside it",
                              f"'head' = {sidecar.get('head')!r}, no such file in {side.parent}")
    try:
        head_state = load_file(str(head_path))
    except Exception as exc:
        raise DataFormatError(head_path, "a safetensors file", f"{type(exc).__name__}: {exc}") from exc
    final = head_state.get("head.final.weight")
    if final is None or final.dim() != 4:
        raise DataFormatError(head_path, "a heatmap head state dict with 'head.final.weight'",
                              f"keys {sorted(head_state)[:6]}...")
    if final.shape[0] != NUM_KEYPOINTS:
        raise DataFormatError(
            head_path, f"{NUM_KEYPOINTS} heatmaps in 'head.final.weight' (COCO-17, what HAP reads)",
            f"{final.shape[0]} (task {task!r})")
    return PoseCheckpoint(backbone_path, head_path, sidecar, head_state, pose)


def _deconv_channels(head_state: dict[str, torch.Tensor]) -> tuple[int, list[int]]:
    """(input channels, deconvolution widths) of a ``DeconvHeatmapHead`` from its weights' shapes."""
    layers = sorted((int(m.group(1)), tensor) for key, tensor in head_state.items()
                    if (m := re.fullmatch(r"head\.deconv\.(\d+)\.weight", key)) and tensor.dim() == 4)
    if not layers:
        return int(head_state["head.final.weight"].shape[1]), []
    return int(layers[0][1].shape[0]), [int(t.shape[1]) for _, t in layers]


def load_pose_model(checkpoint: PoseCheckpoint) -> tuple[Any, Any, dict[str, Any]]:
    """(backbone, PoseModel, pose description) rebuilt from a checked checkpoint, weights loaded strictly."""
    from saip_bench.pretrain.export import load_backbone
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import set_final_norm
    from saip_bench.tasks.dense.features import head_params, resolve_levels
    from saip_bench.tasks.dense.heatmap_head import DeconvHeatmapHead
    from saip_bench.tasks.dense.pose_task import PoseModel, pose_description
    from saip_bench.tasks.dense.topdown import pose_meta

    backbone = load_backbone(checkpoint.backbone_path)
    pose = checkpoint.pose
    if pose is None:  # kept before the sidecar recorded it: the spec file the unit ran (no --cfg-options)
        spec = get_task_spec(*str(checkpoint.sidecar["spec"]).split("/", 1))
        protocol = str(checkpoint.sidecar["protocol"])
        level = head_params(spec, protocol).get("level", -1)
        meta = pose_meta(POSE_TASKS[checkpoint.sidecar["task"]])
        pose = {**pose_description(spec, protocol, meta, resolve_levels(backbone, [int(level)])),
                "from": f"tasks/{spec.key}.yaml (the sidecar predates 'pose')"}
    meta = pose_meta(str(pose["layout"]))
    channels, widths = _deconv_channels(checkpoint.head_state)
    model = PoseModel(DeconvHeatmapHead(channels, meta.num_keypoints, widths), list(pose["levels"]), meta)
    missing, unexpected = model.load_state_dict(checkpoint.head_state, strict=False)
    if missing or unexpected:
        raise DataFormatError(checkpoint.head_path, "the weights of a deconvolution heatmap head",
                              f"missing {missing}, unexpected {unexpected}")
    set_final_norm(backbone, bool(pose["final_norm"]))
    return backbone, model, pose


# ---- the pool ----------------------------------------------------------------------------------------

def images_sha256(index: Any) -> str:
    """Hash of the pool's training images in order (path and size): what the keypoints belong to.

    Not the index's listing hash: writing ``keypoints.json`` into the pool changes that listing."""
    digest = hashlib.sha256()
    sizes = index.array("files_size")
    for number in index.train.tolist():
        digest.update(f"{index.rel(number)}\0{int(sizes[number])}\0".encode())
    return digest.hexdigest()[:16]


class PoolCrops(Dataset):
    """Position in the pool -> the pose task's test-time crop of that whole image (workers do this)."""

    def __init__(self, index: Any, pipeline: Any, input_hw: tuple[int, int]) -> None:
        self.index, self.pipeline, self.input_hw = index, pipeline, tuple(input_hw)

    def __len__(self) -> int:
        return len(self.index.train)

    def __getitem__(self, position: int) -> dict[str, Any]:
        from saip_bench.tasks.common import load_rgb
        from saip_bench.tasks.dense.topdown import _valid_box

        rel = self.index.rel(int(self.index.train[position]))
        out: dict[str, Any] = {"position": position, "ok": False, "error": "",
                               "image": torch.zeros(3, *self.input_hw),
                               "center": torch.zeros(2, dtype=torch.float64),
                               "scale": torch.ones(2, dtype=torch.float64), "hw": torch.zeros(2)}
        try:
            image = np.asarray(load_rgb(self.index.root / rel))
        except DataFormatError as exc:
            out["error"] = str(exc)
            return out
        height, width = image.shape[:2]
        box = _valid_box([0, 0, width, height], width, height) or [0.0, 0.0, float(width), float(height)]
        crop = self.pipeline({"bbox": box, "bbox_score": 1.0,
                              "keypoints": np.zeros((NUM_KEYPOINTS, 3), np.float32)}, image)
        out.update(ok=True, image=crop["image"], center=torch.from_numpy(crop["center"]),
                   scale=torch.from_numpy(crop["scale"]),
                   hw=torch.tensor([height, width], dtype=torch.float32))
        return out


def chunk_batches(chunks: Sequence[int], n: int, chunk_size: int, batch_size: int) -> list[list[int]]:
    """Batches of pool positions, chunk by chunk; a batch never spans two chunks."""
    batches = []
    for chunk in chunks:
        start, stop = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
        batches += [list(range(s, min(stop, s + batch_size))) for s in range(start, stop, batch_size)]
    return batches


def to_entry(points: np.ndarray, scores: np.ndarray, height: float, width: float,
             min_score: float) -> list[list[float]]:
    """17 ``[x, y, v]`` in image pixels; ``v`` is the heatmap score, 0 when below ``min_score`` or when the
    point falls outside the image (HAP's release drops out-of-image points the same way)."""
    entry = []
    for (x, y), score in zip(points.tolist(), scores.tolist(), strict=True):
        usable = 0.0 <= x < width and 0.0 <= y < height and score > min_score and score > 0
        entry.append([round(x, XY_DECIMALS), round(y, XY_DECIMALS),
                      round(float(score), SCORE_DECIMALS) if usable else 0.0])
    return entry


# ---- the run -----------------------------------------------------------------------------------------

def start_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = _dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch else _dt.datetime.now(_dt.UTC)
    return moment.replace(microsecond=0).isoformat()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Named differences between two labelling identities (pool, checkpoint, pose settings, settings)."""
    out = []
    if old.get("pool") != new.get("pool"):
        before, now = old.get("pool") or {}, new["pool"]
        out.append(f"the pool changed ({before.get('images')} images, sha {before.get('images_sha256')} "
                   f"then; {now['images']} images, sha {now['images_sha256']} now)")
    if old.get("checkpoint") != new.get("checkpoint"):
        before, now = old.get("checkpoint") or {}, new["checkpoint"]
        out.append(f"the checkpoint changed (backbone {before.get('backbone_sha256')}, head "
                   f"{before.get('head_sha256')} then; {now['backbone_sha256']}, {now['head_sha256']} now)")
    for key in ("pose", "settings", "format"):
        if old.get(key) != new.get(key):
            out.append(f"{key} changed ({old.get(key)} then; {new.get(key)} now)")
    return out


def _identity_of(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key) for key in ("format", "pool", "checkpoint", "pose", "settings")}


def label_pool(
    pool: str | Path,
    checkpoint: str | Path,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "auto",
    min_score: float = 0.0,
    chunk_size: int = CHUNK_SIZE,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
    amp: bool = True,
) -> Path:
    """Pseudo-label every image of ``pool`` with a kept pose model; returns ``POOL/keypoints.json``."""
    from saip_bench.data.pool_index import INDEX_DIRNAME, load_index
    from saip_bench.utils import atomic_write_json, default_device, resolve_amp

    pool = Path(pool)
    if batch_size < 1 or chunk_size < 1 or workers < 0:
        raise UserError("--batch-size and the chunk size must be >= 1, --workers >= 0")
    if pool.is_dir() and not os.access(pool, os.W_OK):
        raise DataFormatError(pool, "a writable pool folder (HAP reads POOL/keypoints.json)", "read-only")
    ckpt = find_pose_checkpoint(checkpoint)  # a wrong checkpoint fails before the pool is read
    index = load_index(pool, progress=progress)
    n = len(index.train)
    if n == 0:
        raise DataFormatError(pool / index.image_dir, "at least one readable image", "none")
    the_device = default_device() if device in ("auto", None) else torch.device(device)
    amp = resolve_amp(amp, the_device)
    backbone, model, pose = load_pose_model(ckpt)
    identity = {
        "format": FORMAT,
        "pool": {"images": n, "images_sha256": images_sha256(index)},
        "checkpoint": ckpt.identity,
        "pose": pose,
        # batch size, device and precision change the last bits (bf16 most): a resume must keep them
        "settings": {"min_score": float(min_score), "chunk_size": int(chunk_size),
                     "batch_size": int(batch_size), "device": the_device.type, "amp": bool(amp),
                     "box": "the whole image, padding 1.25 (one person per crop)"},
    }
    target = keypoints_path(pool)
    if target.is_file():
        existing = read_provenance(target)
        if existing is not None and not _differences(_identity_of(existing), identity):
            log.info(f"{target}: up to date ({n} images, checkpoint {ckpt.identity['backbone_sha256']})")
            return target
        if not overwrite:
            why = ("it has no provenance (hand-made, or the synthetic world's ground truth)"
                   if existing is None else
                   "it was made differently: " + "; ".join(_differences(_identity_of(existing), identity)))
            raise UserError(f"{target} exists and {why}; --overwrite replaces it once the new file is "
                            "complete (the old one stays until then)")
    work = pool / INDEX_DIRNAME / Path(*PARTIAL_DIR)
    state_path = work / STATE_FILE
    chunks_total = -(-n // chunk_size)
    if restart and work.exists():
        shutil.rmtree(work)
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataFormatError(state_path, "the state of a partial labelling (--restart discards it)",
                                  str(exc)) from exc
        diffs = _differences(_identity_of(state), identity)
        if diffs:
            done = len(list(work.glob("chunk-*.json")))
            raise UserError(f"{work}: partial keypoints of another labelling ({done} of "
                            f"{state.get('chunks', '?')} chunks): " + "; ".join(diffs)
                            + ". Rerun with --restart to discard them")
    else:
        state = {**identity, "started": start_date(), "chunks": chunks_total}
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_path, state)

    def chunk_file(chunk: int) -> Path:
        return work / f"chunk-{chunk:06d}.json"

    todo = [c for c in range(chunks_total) if not chunk_file(c).is_file()]
    if len(todo) < chunks_total:
        log.info(f"keypoints of {pool}: continuing, {chunks_total - len(todo)} of {chunks_total} chunks "
                 "already done")
    if todo:
        log.info(f"pseudo-labelling {n} images of {pool} with {ckpt.backbone_path} on {the_device}"
                 f"{' (bf16)' if amp else ''}")
        _label_chunks(index, backbone, model, pose, the_device, amp, todo, chunk_size, batch_size, workers,
                      min_score, chunk_file, progress, n)
    return _merge(pool, work, state, chunks_total, chunk_file, target, n)


def _label_chunks(index: Any, backbone: Any, model: Any, pose: dict[str, Any], device: torch.device,
                  amp: bool, todo: list[int], chunk_size: int, batch_size: int, workers: int,
                  min_score: float, chunk_file: Any, progress: bool, n: int) -> None:
    """Predict the chunks in ``todo``; each chunk's file is written (atomically) once all its images are."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from saip_bench.devices import enable_speed, place_models
    from saip_bench.tasks.dense.topdown import TopDownPipeline, build_codec, decode_to_image, flip_back
    from saip_bench.utils import atomic_write_json, autocast, console

    input_hw = (int(pose["input_size"][0]), int(pose["input_size"][1]))
    codec_config = dict(pose["codec"])
    for key in ("input_size", "heatmap_size"):
        codec_config[key] = tuple(codec_config[key])
    codec = build_codec(codec_config)
    shift = codec_config["type"] != "UDPHeatmap"
    heatmap_hw = (input_hw[0] // 4, input_hw[1] // 4)
    pipeline = TopDownPipeline(model.meta, input_hw, codec_config, train=False, augment=False)
    enable_speed(device)
    place_models(device, backbone, model)
    backbone.eval()
    model.eval()
    batches = chunk_batches(todo, n, chunk_size, batch_size)
    loader = DataLoader(PoolCrops(index, pipeline, input_hw), batch_sampler=batches, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    pending: dict[int, dict[int, Any]] = {}
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    images_todo = sum(len(b) for b in batches)
    with Progress(*columns, console=console, disable=not progress) as bar, torch.no_grad():
        task = bar.add_task("pose pseudo-labels", total=images_todo)
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            with autocast(device, enabled=amp):
                heatmaps = model.head(model.feature(backbone, images), heatmap_hw).float()
                if pose.get("flip_test", True):
                    mirrored = model.head(model.feature(backbone, images.flip(-1)), heatmap_hw).float()
                    heatmaps = (heatmaps + flip_back(mirrored, model.meta.flip_indices, shift)) / 2
            maps = heatmaps.cpu().numpy()
            for i, position in enumerate(batch["position"].tolist()):
                rel = index.rel(int(index.train[position]))
                if not bool(batch["ok"][i]):
                    entry: Any = {"unreadable": batch["error"][i]}
                else:
                    points, scores = decode_to_image(codec, maps[i], batch["center"][i].numpy(),
                                                     batch["scale"][i].numpy(), input_hw)
                    height, width = batch["hw"][i].tolist()
                    entry = to_entry(points, scores, height, width, min_score)
                chunk = position // chunk_size
                pending.setdefault(chunk, {})[position] = [rel, entry]
                expected = min(n, (chunk + 1) * chunk_size) - chunk * chunk_size
                if len(pending[chunk]) == expected:
                    done = pending.pop(chunk)
                    rows = [done[p] for p in sorted(done)]
                    atomic_write_json(chunk_file(chunk), {"chunk": chunk, "entries": rows}, indent=None)
            bar.advance(task, len(batch["position"]))


def _merge(pool: Path, work: Path, state: dict[str, Any], chunks_total: int, chunk_file: Any,
           target: Path, n: int) -> Path:
    """All chunks -> the keypoints file (pool order), with provenance; then the partial results go.

    Two passes over the chunk files: the provenance (with the unreadable images) comes first in the file,
    and the images are then streamed, so a million of them are never held in memory at once."""

    def rows() -> Iterator[tuple[str, Any]]:
        for chunk in range(chunks_total):
            path = chunk_file(chunk)
            try:
                entries = json.loads(path.read_text())["entries"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataFormatError(path, "a complete chunk of keypoints (--restart redoes all)",
                                      str(exc)) from exc
            yield from ((str(rel), entry) for rel, entry in entries)

    unreadable = [f"{rel}: {entry.get('unreadable')}" for rel, entry in rows() if isinstance(entry, dict)]
    limit = max(10, MAX_UNREADABLE_FRACTION * n)
    if len(unreadable) > limit:
        raise DataFormatError(pool, f"at most {MAX_UNREADABLE_FRACTION:.0%} unreadable images",
                              f"{len(unreadable)} of {n} (first: {'; '.join(unreadable[:3])})")
    provenance = {**_identity_of(state), "date": state["started"], "images_labelled": n - len(unreadable),
                  "unreadable": len(unreadable), "unreadable_first": unreadable[:10],
                  "made_by": "saip-bench data keypoints"}
    labelled = ((rel, entry) for rel, entry in rows() if not isinstance(entry, dict))
    write_keypoints(target, labelled, provenance)
    shutil.rmtree(work, ignore_errors=True)
    message = f"wrote {target}: {n - len(unreadable)} images"
    if unreadable:
        message += f", {len(unreadable)} unreadable skipped (first: {unreadable[0]})"
    log.info(message)
    return target


# ---- the bench plan ----------------------------------------------------------------------------------

def keypoints_command(pool: str | Path) -> str:
    return f"saip-bench data keypoints {pool} --checkpoint POSE_MODEL"


def waiting_for_keypoints(method: str, pool: str | Path | None) -> str | None:
    """Why ``method`` cannot pretrain on ``pool`` yet (it needs keypoints the pool lacks), or None."""
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS

    import_submodules("saip_bench.pretrain.methods")
    if pool is None or method not in METHODS or not getattr(METHODS.get(method), "needs_keypoints", False):
        return None
    if keypoints_path(pool).is_file():
        return None
    return (f"waiting for keypoints: {keypoints_path(pool)} is missing; make them with "
            f"`{keypoints_command(pool)}` (POSE_MODEL: the weights a COCO keypoints unit kept with "
            "--keep-finetuned; docs/pretraining.md#keypoints-for-hap)")
