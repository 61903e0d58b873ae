"""``saip-bench eval``: one unit (a backbone on one task/dataset/protocol), scored and recorded.

The backbone is an exported checkpoint (``--checkpoint``) or a method pretrained on demand (``--method``,
cached like in ``bench``). ``--data-root`` is the dataset folder itself or a folder holding
``<dataset>/`` (e.g. a synthetic world written by ``saip-bench data synth``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from saip_bench.cachedir import default_cache_dir
from saip_bench.errors import UserError

if TYPE_CHECKING:
    from saip_bench.bench.runner import BenchRunner


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate one backbone on one task/dataset (writes predictions, scores and a record)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--method", help="pretraining method (pretrained on demand and cached; 'random' = init)"
    )
    source.add_argument(
        "--checkpoint", "--init", type=Path,
        help="an exported backbone (.safetensors with its sidecar), or a published checkpoint: timm, "
        "safetensors, plain PyTorch, MAE/HAP/PATH releases (keys remapped; --backbone picks the backbone, "
        "default: the one it fits)",
    )
    parser.add_argument(
        "--name", default=None,
        help="method name of a published --checkpoint in records and boards (default: the file's stem)",
    )
    parser.add_argument(
        "--backbone", default=None, help="backbone name (default: from the checkpoint, else vit_tiny)"
    )
    parser.add_argument("--task", required=True, help="task name (see `saip-bench list tasks`)")
    parser.add_argument("--dataset", required=True, help="dataset name")
    parser.add_argument(
        "--protocol",
        default="default",
        help="protocol name in the spec, or fast / paper / default (default: the spec's default)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="the dataset folder, or a folder with <dataset>/ inside (e.g. a synthetic world); "
        "default: $SAIP_DATA, as for `saip-bench data verify`",
    )
    parser.add_argument(
        "--pretrain-data",
        type=Path,
        default=None,
        help="pretraining images for --method (default: <data-root>/pretrain when it exists)",
    )
    parser.add_argument("--pretrain-preset", default="quick", help="pretraining preset for --method")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the preset's step count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N samples per split (record marked limited)"
    )
    parser.add_argument(
        "--visualize", type=int, default=0, metavar="N", help="write N prediction PNGs (out/units/*/vis)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / "eval", help="run folder (records/, units/)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="default: $SAIP_CACHE_DIR, else the user cache folder (~/.cache/saip-bench)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--loader-workers", type=int, default=0, metavar="N",
                        help="DataLoader num_workers (0: load in the training process)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    from saip_bench.commands.bench import add_cfg_options_argument, add_compile_argument

    add_compile_argument(parser)

    add_cfg_options_argument(parser, scoped=False)
    from saip_bench.commands.bench import add_keep_finetuned_argument

    add_keep_finetuned_argument(parser)
    from saip_bench.commands.bench import add_parallel_arguments

    add_parallel_arguments(parser, default="data")
    from saip_bench.logsinks import add_logger_argument

    add_logger_argument(parser)
    parser.set_defaults(func=run)


def _roots(data_root: Path, dataset: str) -> tuple[Path, Path | None, str, dict]:
    """Dataset root, pretraining folder (if any), data source (synthetic when a world marker exists) and
    the world's preset/seed."""
    if not data_root.exists():
        raise UserError(f"--data-root {data_root} does not exist")
    world = data_root if (data_root / dataset).is_dir() else data_root.parent
    root = data_root / dataset if (data_root / dataset).is_dir() else data_root
    pretrain = world / "pretrain" if (world / "pretrain").is_dir() else None
    marker = world / ".world.json"
    world_info: dict = {}
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            world_info = {
                "synth_preset": str(info.get("preset", "unknown")),
                "synth_seed": int(info.get("seed", 0)),
            }
        except (ValueError, OSError):
            world_info = {"synth_preset": "unknown"}
    return root, pretrain, "synthetic" if marker.exists() else "real", world_info


def check_labels(runner: BenchRunner, task: str, dataset: str) -> None:
    """Before any training: every GT label / id map of the splits the unit uses has its image's size
    (file headers only). Why: a wrong-size GT label used to surface after the whole unit, blamed on our
    prediction PNG. The dataset read here is the runner's (cached), so it is read once."""
    from saip_bench.data.readers import READERS, get_reader
    from saip_bench.data.readers.verify import check_label_sizes

    spec = next((s for s in runner.hooks.resolved_specs().values()
                 if s.task == task and s.dataset == dataset), None)
    if spec is None or dataset not in READERS:
        return  # the runner reports an unknown task/dataset with its own message
    data = runner.dataset(spec)
    check_label_sizes(get_reader(dataset), data, sorted(set(spec.splits.values())))


def check_names(args: argparse.Namespace) -> None:
    """Every name given is known, with a did-you-mean, before any data is read: a typo in --method or
    --task used to surface as a missing-pretraining-data error."""
    from saip_bench.backbones import BACKBONES
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS
    from saip_bench.specs import task_spec_path

    task_spec_path(args.task, args.dataset)  # SpecError naming the closest task/dataset pair
    if args.method is not None:
        import_submodules("saip_bench.pretrain.methods")
        METHODS.get(args.method)
    if args.backbone is not None:
        BACKBONES.get(args.backbone)


def resolve_data_root(args: argparse.Namespace) -> Path:
    """``--data-root``, else ``$SAIP_DATA`` (one data root for every command)."""
    import os

    from saip_bench.data.readers import DATA_ENV

    if args.data_root is not None:
        return Path(args.data_root)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    raise UserError(f"eval needs data: give --data-root DIR or set ${DATA_ENV}")


def run(args: argparse.Namespace) -> int:
    from saip_bench.bench.presets import BenchPreset
    from saip_bench.bench.runner import BenchConfig, BenchRunner
    from saip_bench.bench.store import OverwritePolicy
    from saip_bench.utils import console

    check_names(args)
    args.data_root = resolve_data_root(args)
    root, world_pretrain, source, world_info = _roots(args.data_root, args.dataset)
    backbone = args.backbone
    method = args.method
    overrides = {}
    if args.checkpoint is not None:
        from saip_bench.pretrain.export import read_sidecar
        from saip_bench.pretrain.external import external_method_name, guess_backbone, is_exported

        if is_exported(args.checkpoint):
            meta = read_sidecar(args.checkpoint)
            backbone = backbone or meta.get("arch")
            method = str(args.name or meta.get("method") or "checkpoint")
        else:  # a published checkpoint (issue 24): remapped into the backbone by the checkpoint cache
            backbone = backbone or guess_backbone(args.checkpoint)
            method = args.name or external_method_name(args.checkpoint)
        overrides[(method, backbone)] = args.checkpoint
    backbone = backbone or "vit_tiny"
    pretrain_data = args.pretrain_data or world_pretrain
    from saip_bench.pretrain.api import needs_training_data

    if args.checkpoint is None and pretrain_data is None and needs_training_data(method):
        raise UserError(
            "--method needs pretraining images: give --pretrain-data (or a --data-root world with pretrain/)"
        )
    preset = BenchPreset.model_validate(
        {
            "name": "eval",
            "data": source,
            "methods": [method],
            "backbones": [backbone],
            "tasks": [f"{args.task}/{args.dataset}"],
            "protocol": args.protocol,
            "seeds": [args.seed],
            "pretrain": {"preset": args.pretrain_preset, "steps": args.pretrain_steps, "seed": args.seed},
            **world_info,
        }
    )
    config = BenchConfig(
        preset=preset,
        run_dir=args.out,
        cache_dir=args.cache_dir or default_cache_dir(),
        pretrain_data=pretrain_data,
        checkpoints=overrides,
        limit=args.limit,
        overwrite=OverwritePolicy.ALWAYS,
        device=args.device,
        loader_workers=args.loader_workers,
        compile=args.compile,
        cfg_options=tuple(args.cfg_options or ()),  # applied to the unit's spec, validated by the runner
        fail_fast=True,
        visualize=args.visualize,
        dataset_roots={args.dataset: root},
        keep_finetuned=args.keep_finetuned,
        unit_parallel=args.unit_parallel,
        per_rank_batch=args.per_rank_batch,
    )
    runner = BenchRunner(config)
    check_labels(runner, args.task, args.dataset)
    report = runner.run()
    if not runner.dist.is_main:  # under torchrun rank 0 writes the record and prints it
        return 1 if report.failed else 0
    if not report.written:
        return 1
    record = json.loads(report.written[0].read_text())
    if args.json:
        print(json.dumps(record, indent=1, sort_keys=True))
    else:
        from saip_bench.commands.metric import print_metrics

        print_metrics(
            record["scores"], as_json=False, title=f"{method}/{backbone} on {args.task}/{args.dataset}"
        )
        console.print(f"record: {report.written[0]}")
    return 0
