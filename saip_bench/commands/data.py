"""``saip-bench data synth`` (write the synthetic world), ``saip-bench data verify`` (check a root),
``saip-bench data index`` (build the memory-mapped index of a pretraining pool) and ``saip-bench data
keypoints`` (pseudo-label a pool for HAP with a kept pose model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saip_bench.commands import add_hidden_alias


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="generate the synthetic world or verify a dataset")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write all 12 datasets of the synthetic human world")
    synth.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per dataset)")
    synth.add_argument("--preset", default="tiny", help="tiny | default | large | gpu_check")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--datasets", nargs="*", default=None, help="only these datasets (default: all)")
    synth.add_argument("--force", action="store_true", help="regenerate even if the cache key matches")
    synth.add_argument("--no-contact-sheets", action="store_true")
    synth.set_defaults(func=run_synth)

    verify = sub.add_parser("verify", help="check a dataset root against its card; exit 0 if usable")
    verify.add_argument("name", help="dataset name (see `saip-bench list datasets`)")
    verify.add_argument("--data-root", dest="root", type=Path, default=None,
                        help="the dataset folder, or a folder with <name>/ inside "
                        "(default $SAIP_DATA/<name>)")
    add_hidden_alias(verify, "--root", "root", type=Path)
    verify.add_argument("--version", default=None, help="force a version instead of detecting it")
    verify.add_argument("--full", action="store_true", help="open every file, not a sample")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=run_verify)

    index = sub.add_parser(
        "index",
        help="index a pretraining pool once (paths, sizes, image sizes, identities), shared by every worker",
    )
    index.add_argument("pool", type=Path, help="pretraining root (images/ or train/, optional backgrounds/)")
    index.add_argument("--rebuild", action="store_true", help="rebuild even if the index is up to date")
    index.add_argument(
        "--flat", action="store_true", help="index every image under POOL (e.g. a folder of backgrounds)"
    )
    index.add_argument("--workers", type=int, default=None, help="header-reading processes (default: CPUs)")
    index.add_argument("--json", action="store_true", help="print one JSON object")
    index.set_defaults(func=run_index)

    keypoints = sub.add_parser(
        "keypoints",
        help="pseudo-label every pool image with a kept pose model: POOL/keypoints.json, what HAP reads",
    )
    keypoints.add_argument("pool", type=Path, help="pretraining root (images/ or train/): person crops")
    keypoints.add_argument("--checkpoint", type=Path, required=True,
                           help="a COCO keypoints unit's --keep-finetuned weights (finetuned_backbone"
                                ".safetensors or its folder)")
    keypoints.add_argument("--batch-size", type=int, default=64)
    keypoints.add_argument("--workers", type=int, default=4, help="DataLoader workers decoding and cropping")
    keypoints.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, ...")
    keypoints.add_argument("--min-score", type=float, default=0.0,
                           help="keypoints scoring at or below this are written as unusable (v = 0)")
    keypoints.add_argument("--overwrite", action="store_true",
                           help="replace a keypoints.json made otherwise (kept until the new one is done)")
    keypoints.add_argument("--restart", action="store_true",
                           help="discard partial results of an earlier labelling instead of continuing them")
    keypoints.add_argument("--no-amp", action="store_true",
                           help="fp32 (default: bf16 where the device runs it natively)")
    keypoints.add_argument("--no-progress", action="store_true")
    keypoints.set_defaults(func=run_keypoints)


def run_synth(args: argparse.Namespace) -> int:
    from saip_bench.data.synth import generate_world

    generate_world(
        args.out, preset=args.preset, seed=args.seed, datasets=args.datasets, force=args.force,
        contact_sheets=not args.no_contact_sheets,
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from saip_bench.data.readers import resolve_root, verify_dataset

    root = args.root
    if root is not None and (Path(root) / args.name).is_dir():  # a data root holding <name>/, as for eval
        root = Path(root) / args.name
    root = resolve_root(args.name, root)
    report = verify_dataset(args.name, root, version=args.version, full=args.full)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        report.print()
    return 0 if report.usable else 1


def run_index(args: argparse.Namespace) -> int:
    import time

    from saip_bench.data.pool_index import load_index
    from saip_bench.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be >= 1")
    tic = time.perf_counter()
    index = load_index(args.pool, rebuild=args.rebuild, progress=not args.json, flat=args.flat,
                       workers=args.workers)
    meta = index.meta
    report = {
        "pool": str(args.pool),
        "index": str(index.path),
        "images": len(index.train),
        "backgrounds": len(index.backgrounds),
        "identities": len(index.identities),
        "files": meta["n_files"],
        "unreadable": index.unreadable,
        "unreadable_first": meta["unreadable_first"],
        "listing_sha256": index.listing_hash,
        "fingerprint": index.fingerprint(),
        "built_at": meta["built_at"],
        "build_seconds": meta["build_seconds"],
        "seconds": round(time.perf_counter() - tic, 3),
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for key, value in report.items():
            if key != "unreadable_first" or value:
                print(f"{key:>16}: {value}")
    return 0


def run_keypoints(args: argparse.Namespace) -> int:
    from saip_bench.pretrain.pseudo_keypoints import label_pool

    label_pool(args.pool, args.checkpoint, batch_size=args.batch_size, workers=args.workers,
               device=args.device, min_score=args.min_score, overwrite=args.overwrite, restart=args.restart,
               progress=not args.no_progress, amp=not args.no_amp)
    return 0
