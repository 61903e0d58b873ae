"""Python entry point used by the CLI and the benchmark runner: ``pretrain(...) -> exported backbone``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saip_bench.backbones import BACKBONES, create_backbone
from saip_bench.discovery import import_submodules
from saip_bench.errors import UserError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.export import save_backbone, sidecar_path
from saip_bench.pretrain.trainer import (
    DistInfo,
    Trainer,
    TrainResult,
    deep_merge,
    init_distributed,
    load_preset,
)
from saip_bench.utils import seed_everything

BACKBONE_FILE = "backbone.safetensors"


def build_method(
    method: str,
    backbone: str,
    preset: str,
    overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
    init: str | Path | None = None,
) -> tuple[PretrainMethod, Any]:
    """Instantiate ``method`` on a fresh ``backbone`` with the preset's configs (checks support first).

    With ``data_dir``, the method first derives what it needs from the data (``prepare_config``).
    ``init``: start from a published checkpoint (timm, MAE, HAP, PATH, plain PyTorch; remapped by
    ``saip_bench.pretrain.external``), loaded before the method copies the backbone (EMA teachers);
    its source is kept as ``method.init_source`` for the export's sidecar.
    """
    import_submodules("saip_bench.pretrain.methods")
    method_cls = METHODS.get(method)
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES.names())}")
    train_cfg, method_cfg = load_preset(method, preset, overrides)
    if method_overrides:
        method_cfg = deep_merge(method_cfg, method_overrides)  # views.colour keeps the preset's view sizes
    if data_dir is not None:
        method_cfg = method_cls.prepare_config(method_cfg, data_dir)
    net = create_backbone(
        backbone, img_size=tuple(train_cfg.img_size), drop_path_rate=train_cfg.drop_path_rate
    )
    reason = method_cls.unsupported_reason(net, method_cfg)
    if reason:
        raise UserError(reason)
    source = _load_init(net, init) if init is not None else None
    method_obj = method_cls(net, method_cfg)
    method_obj.init_source = source  # type: ignore[assignment]
    return method_obj, train_cfg


def _load_init(net: Any, init: str | Path) -> dict[str, Any]:
    """Load ``--init`` weights into ``net``; what the sidecar records of them (file, hash, mapping)."""
    from saip_bench.bench.checkpoints import weights_hash
    from saip_bench.pretrain.external import is_exported, load_external_into

    if is_exported(init):  # one of our exports: same architecture, same names
        from saip_bench.pretrain.export import load_backbone

        source = load_backbone(init, img_size=tuple(net.img_size))
        net.body.load_state_dict(source.body.state_dict())
        mapping: dict[str, Any] = {"layout": "saip"}
    else:
        mapping = load_external_into(net, init).as_dict()
    return {"path": str(Path(init).resolve()), "weights_hash": weights_hash(init), "mapping": mapping}


def pretrain(
    method: str,
    backbone: str,
    preset: str,
    data_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    steps: int | None = None,
    resume: bool = False,
    amp: bool | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume_from: str | Path | None = None,
    allow_config_change: bool = False,
    backgrounds: str | Path | None = None,
    init: str | Path | None = None,
) -> Path:
    """Pretrain and export; returns ``<out_dir>/backbone.safetensors`` (+ ``backbone.json`` sidecar).

    Under ``torchrun`` every rank calls this; rank 0 writes the export. ``steps`` overrides the preset's
    length; ``overrides``/``method_overrides`` patch the preset's trainer / method settings.

    A compatible checkpoint in ``out_dir`` is always continued (``resume=True`` only insists that there
    is one); ``overwrite=True`` deletes the folder's checkpoints, log and export and starts afresh;
    ``resume_from`` (+ ``allow_config_change``) continues another checkpoint, see ``Trainer``.
    ``backgrounds``: SAIP's canvas backgrounds (a folder, ``"pool"``, or None: ``<data>/backgrounds/`` if
    it has images, else the pool's own images); the source used is written to the export's sidecar.
    ``init``: a published checkpoint the backbone starts from (``build_method``), named in the sidecar.
    """
    result, trainer = run_training(
        method,
        backbone,
        preset,
        data_dir,
        out_dir,
        seed,
        steps,
        resume,
        amp,
        device,
        progress,
        overrides,
        method_overrides,
        overwrite=overwrite,
        resume_from=resume_from,
        allow_config_change=allow_config_change,
        backgrounds=backgrounds,
        init=init,
    )
    path = Path(out_dir) / BACKBONE_FILE
    if trainer.dist.is_main:
        # resumes from another checkpoint (resume_from), with any config change: where the weights came from
        lineage = {"lineage": trainer.lineage} if trainer.lineage else {}
        source = getattr(trainer.method, "init_source", None)  # --init: the published weights started from
        init = {"init": source} if source else {}
        save_backbone(
            trainer.method.export_backbone(),
            path,
            {
                "method": method,
                "preset": preset,
                "seed": seed,
                "step": result.step,
                "total_steps": result.total_steps,
                "config_hash": trainer.config_hash(),
                "train_config": trainer.config.model_dump(mode="json"),  # amp: as it ran
                "amp_requested": trainer.amp_requested,
                "hyperparameters": trainer.method.hyperparameters(),
                "world_size": trainer.dist.world_size,
                "effective_batch": trainer.effective_batch,
                "final_losses": {k: v for k, v in result.last.items() if k.startswith("loss")},
                "data": trainer.data_provenance(),
                **lineage,
                **init,
            },
        )
    if trainer.dist.enabled:
        torch.distributed.barrier()
    return path


def run_training(
    method: str,
    backbone: str,
    preset: str,
    data_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    steps: int | None = None,
    resume: bool = False,
    amp: bool | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, Any] | None = None,
    stop_after: int | None = None,
    overwrite: bool = False,
    resume_from: str | Path | None = None,
    allow_config_change: bool = False,
    backgrounds: str | Path | None = None,
    init: str | Path | None = None,
) -> tuple[TrainResult, Trainer]:
    overrides = dict(overrides or {})
    if steps is not None:
        overrides.update({"steps": steps, "epochs": None})
    if amp is not None:
        overrides["amp"] = amp
    dist_info, dev = init_distributed(torch.device(device) if device is not None else None)
    seed_everything(seed + dist_info.rank)
    method_obj, train_cfg = build_method(
        method, backbone, preset, overrides, method_overrides, data_dir=data_dir, init=init
    )
    trainer = Trainer(
        method_obj,
        train_cfg,
        data_dir,
        out_dir,
        seed=seed,
        device=dev,
        resume=resume,
        progress=progress,
        dist_info=dist_info if dist_info.enabled else DistInfo(),
        method_name=method,
        stop_after=stop_after,
        overwrite=overwrite,
        resume_from=resume_from,
        allow_config_change=allow_config_change,
        overwrite_also=(BACKBONE_FILE, sidecar_path(BACKBONE_FILE).name),
        backgrounds=backgrounds,
    )
    return trainer.fit(), trainer


def needs_training_data(method: str) -> bool:
    """Whether ``method`` learns from pretraining images (``random`` does not: its export is the seeded
    initial backbone, so it needs no ``--pretrain-data``)."""
    import_submodules("saip_bench.pretrain.methods")
    return bool(getattr(METHODS.get(method), "requires_training", True))


def export_untrained(method: str, backbone: str, preset: str, out_dir: str | Path, seed: int = 0) -> Path:
    """The export of a method that does not train, without a pool: the same seeded weights as the trainer
    path (same ``seed_everything`` before the backbone is built), a sidecar saying no data was read."""
    if needs_training_data(method):
        raise UserError(f"method {method!r} trains on pretraining images; give --pretrain-data")
    seed_everything(seed)
    method_obj, train_cfg = build_method(method, backbone, preset, data_dir=None)
    path = Path(out_dir) / BACKBONE_FILE
    group = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not group or torch.distributed.get_rank() == 0:
        save_backbone(method_obj.export_backbone(), path, {
            "method": method, "preset": preset, "seed": seed, "step": 0, "total_steps": 0,
            "train_config": train_cfg.model_dump(mode="json"), "data": None,
            "hyperparameters": method_obj.hyperparameters(), "world_size": 1,
        })
    if group:
        torch.distributed.barrier()  # the export exists before any rank reads it
    return path
