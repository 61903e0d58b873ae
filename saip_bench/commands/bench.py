"""``saip-bench bench``: plan and run a benchmark preset; optionally build the boards from its records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saip_bench.cachedir import default_cache_dir
from saip_bench.commands import add_hidden_alias
from saip_bench.errors import UserError


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the backbone's blocks in every unit (for GPUs; recorded in provenance); "
        "pretraining "
        "follows its preset's 'compile' (or `saip-bench pretrain --compile`)",
    )


def add_bench_arguments(parser: argparse.ArgumentParser, default_preset: str | None = "default") -> None:
    """Arguments shared by ``saip-bench bench`` and ``run_bench.py``."""
    from saip_bench.bench.presets import available_presets

    parser.add_argument(
        "--preset",
        default=default_preset,
        help=f"bench preset name ({', '.join(available_presets())}) or a YAML path",
    )
    parser.add_argument(
        "--out", dest="run_dir", type=Path, default=None,
        help="run folder holding records/ (default runs/<preset>)",
    )
    add_hidden_alias(parser, "--run-dir", "run_dir", type=Path)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache of the synthetic world, pretrained checkpoints and feature caches "
        "(default: $SAIP_CACHE_DIR, else the user cache folder, ~/.cache/saip-bench on Linux)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real data: folder with one sub-folder per dataset; synthetic: where the world lives",
    )
    parser.add_argument(
        "--pretrain-data",
        type=Path,
        default=None,
        help="real pretraining images (person crops, ImageFolder-like) for real-data presets",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        metavar="METHOD/BACKBONE=PATH",
        help="evaluate this exported backbone instead of pretraining it (repeatable)",
    )
    parser.add_argument(
        "--world",
        type=Path,
        default=None,
        help="use this existing synthetic world as is (from `saip-bench data synth`); never regenerate it",
    )
    parser.add_argument(
        "--shard",
        default=None,
        help="run shard i of n (1-based), e.g. 2/4; default: the job-array task in a SLURM job array "
        "($SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), else 1/1",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most N samples per split (quick checks; records marked limited, never boarded)",
    )
    parser.add_argument(
        "--overwrite",
        choices=("never", "missing", "always"),
        default="missing",
        help="never: keep every existing record; missing (default): run units without a matching "
        "record; always: rerun everything",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods of the preset")
    parser.add_argument("--backbones", nargs="+", default=None, help="only these backbones of the preset")
    parser.add_argument(
        "--tasks", nargs="+", default=None, help="only these tasks / datasets / task/dataset pairs"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="only these evaluation seeds")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)"
    )
    parser.add_argument(
        "--loader-workers", type=int, default=None, metavar="N",
        help="DataLoader num_workers of every unit (default: the bench preset's eval.num_workers)",
    )
    add_compile_argument(parser)
    add_cfg_options_argument(parser, scoped=True)
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing unit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument(
        "--dry-run", action="store_true", help="show the plan and exit (nothing is generated)"
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="single-threaded worker processes on this machine (CPU); pretraining then units run in parallel",
    )
    add_keep_finetuned_argument(parser)
    add_parallel_arguments(parser)
    from saip_bench.logsinks import add_logger_argument

    add_logger_argument(parser)
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="only build the checkpoints the plan needs (--shard splits checkpoints, not units)",
    )


def add_keep_finetuned_argument(parser: argparse.ArgumentParser) -> None:
    """``--keep-finetuned`` of ``bench``, ``run_bench.py`` and ``eval`` (issue 19)."""
    parser.add_argument(
        "--keep-finetuned", action="store_true",
        help="keep each unit's final (selected) weights in its units/<uid>/ folder: "
        "finetuned_backbone.safetensors + .json sidecar and finetuned_head.safetensors, named in the "
        "record's provenance.finetuned",
    )


def add_parallel_arguments(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--unit-parallel`` and ``--per-rank-batch`` of ``bench``, ``run_bench.py`` and ``eval`` (issue 19;
    ``eval`` defaults to ``data``: its one unit spread would leave every rank but one idle)."""
    from saip_bench.bench.schedule import UNIT_PARALLEL_CHOICES

    parser.add_argument(
        "--unit-parallel", choices=UNIT_PARALLEL_CHOICES, default=default,
        help="under torchrun, per unit: auto = data-parallel over all ranks for long GPU fine-tunes whose "
        "batch fills every GPU, else one whole unit per rank (docs/benchmark.md, 'Under torchrun'); "
        "spread = always one unit per rank; data = every fine-tune data-parallel "
        f"(default here: {default})",
    )
    parser.add_argument(
        "--per-rank-batch", type=int, default=None, metavar="N",
        help="fine-tunes: at most N samples per rank and step; the spec's batch is kept by gradient "
        "accumulation (N x ranks x accumulation = the spec's batch_size, else an error)",
    )


def add_cfg_options_argument(parser: argparse.ArgumentParser, scoped: bool) -> None:
    """``--cfg-options`` of ``bench``, ``run_bench.py`` (scoped) and ``eval`` (saip_bench/overrides.py)."""
    scope = "[TASK/DATASET:]" if scoped else ""
    parser.add_argument(
        "--cfg-options", nargs="+", action="extend", default=None, metavar=f"{scope}KEY=VALUE",
        help="override spec settings, validated against the schema, recorded in provenance and in the "
        "record's protocol (finetune+cfg-<hash>), e.g. protocols.finetune.schedule.lr=1e-4 "
        "input_size=[256,128]"
        + ("; a TASK/DATASET: prefix limits one to that spec, else it applies to every spec of the plan "
           "with that key" if scoped else ""),
    )


def resolve_shard(text: str | None) -> tuple[int, int]:
    """``--shard`` as given, else the SLURM job-array task, else the whole plan."""
    from saip_bench.bench.plan import parse_shard
    from saip_bench.bench.schedule import slurm_array_shard

    if text is not None:
        return parse_shard(text)
    return slurm_array_shard() or (1, 1)


def config_from_args(args: argparse.Namespace):
    from saip_bench.bench.checkpoints import parse_checkpoint_overrides
    from saip_bench.bench.presets import load_bench_preset
    from saip_bench.bench.runner import BenchConfig
    from saip_bench.bench.store import OverwritePolicy
    from saip_bench.overrides import parse_overrides

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.loader_workers is not None and args.loader_workers < 0:
        raise UserError("--loader-workers must be 0 or more")
    preset = load_bench_preset(args.preset)
    cfg_options = tuple(args.cfg_options or ())
    parse_overrides(cfg_options)  # syntax now; keys and types when the runner applies them to the specs
    return BenchConfig(
        preset=preset,
        run_dir=args.run_dir or Path("runs") / preset.name,
        cache_dir=args.cache_dir or default_cache_dir(),
        data_root=args.data_root,
        pretrain_data=args.pretrain_data,
        world=args.world,
        checkpoints=parse_checkpoint_overrides(args.checkpoint),
        shard=resolve_shard(args.shard),
        limit=args.limit,
        overwrite=OverwritePolicy(args.overwrite),
        methods=args.methods,
        backbones=args.backbones,
        tasks=args.tasks,
        seeds=args.seeds,
        device=args.device,
        loader_workers=args.loader_workers,
        cfg_options=cfg_options,
        fail_fast=args.fail_fast,
        show_progress=not args.no_progress,
        keep_finetuned=args.keep_finetuned,
        unit_parallel=args.unit_parallel,
        per_rank_batch=args.per_rank_batch,
        compile=args.compile,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark preset: pretrain (cached), evaluate every unit, write records",
        description="Plan the units (method x backbone x task/dataset x protocol x seed) of a preset, run "
        "those without a matching record, and write one JSON record per finished unit.",
    )
    add_bench_arguments(parser)
    parser.add_argument(
        "--leaderboard-out",
        type=Path,
        default=None,
        help="after the run, build the boards from the run's records into this folder",
    )
    parser.set_defaults(func=run)


def dry_run(config, as_json: bool) -> int:
    from saip_bench.bench.runner import BenchRunner, plan_table
    from saip_bench.utils import console

    runner = BenchRunner(config)
    planned = runner.plan(resolve_inputs=False)
    if as_json:
        print(
            json.dumps(
                [
                    {**p.unit.identity(), "uid": p.unit.uid, "status": p.status, "reason": p.reason}
                    for p in planned
                ],
                indent=1,
            )
        )
    else:
        console.print(plan_table(planned, config.preset, config))
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.dry_run:
        return dry_run(config, args.json)
    ok = execute(config, args)
    if args.leaderboard_out is not None and ok and not args.pretrain_only:
        from saip_bench.bench.store import load_records
        from saip_bench.leaderboard import write_boards

        write_boards(load_records([config.run_dir]), args.leaderboard_out)
    return 0 if ok else 1


def execute(config, args: argparse.Namespace, hooks=None) -> bool:
    """Run the plan in this process, as parallel workers, or only its pretraining; True when all went well."""
    from saip_bench.bench.runner import BenchRunner, run_bench
    from saip_bench.bench.schedule import DistInfo

    if args.pretrain_only:
        BenchRunner(config).pretrain_only()
        return True
    if args.workers > 1:
        from saip_bench.bench.parallel import run_parallel

        return run_parallel(config, str(args.preset), args.workers)
    report = run_bench(config, hooks)
    # Under torchrun rank 0's report covers every rank; another rank exiting non-zero for a failed unit
    # would make torchrun stop the ranks still at work.
    return report.ok or not DistInfo.from_env().is_main
