"""Pool index at LUPerson scale: index build, pretraining start-up (to the first step), loader memory.

Creates a synthetic pool of N tiny JPEGs (8x16 px, ``images/<id>/<file>.jpg``, 20 per identity; no
``backgrounds/``, as a raw LUP1M) in /tmp, then measures, each in a fresh Python process:

- ``index``: ``saip-bench data index`` time (rebuild), and the fingerprint time (walk vs index);
- ``startup``: ``run_training(method, vit_tiny, quick, steps=1, num_workers=2)`` wall time from process
  start to the end of the first optimiser step, cold (no index: the build is included) and warm;
- ``loader``: images/s of the pretraining DataLoader with SAIP's ``paper`` preset (source 256x128 and a
  256x256 background per sample, batch 64, ``--loader-workers`` workers) on a separate pool of
  ``--loader-files`` person-crop-sized JPEGs (128x64 to 256x128, smooth colour fields: decode costs like
  a photo's, not like noise's), after 3 warm-up batches; the loader only (the views are built on the
  training device, docs/pretraining.md);
- ``memory``: a DataLoader with 2 workers over the pool (``PretrainFolder.scan`` -> ``PretrainDataset``),
  after 20 batches: peak RSS (VmHWM) of the main process and of each worker, and each worker's private
  (USS: pages it no longer shares with the main process) memory, at N/10 and N files; each worker runs a
  full garbage collection first, as a long-running one does: "independent of pool size" means the
  worker's USS does not grow with N.

"before" = the same script against another checkout of the package (``--code DIR``, e.g. the last commit
exported with ``git archive HEAD saip_bench | tar -x -C /tmp/saip_head``): code without the index lists
and stats the pool itself and has no ``saip-bench data index``.

    OMP_NUM_THREADS=1 python benchmarks/pool_index.py --files 200000                       # after
    OMP_NUM_THREADS=1 python benchmarks/pool_index.py --files 200000 --code /tmp/saip_head # before
    OMP_NUM_THREADS=1 python benchmarks/pool_index.py --files 200000 --code /tmp/saip_head --pairs 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_pool(root: Path, files: int, per_id: int = 20) -> Path:
    """``files`` tiny JPEGs (256 distinct encodings written round-robin: generation is I/O-bound)."""
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == str(files):
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(256):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    tic = time.perf_counter()
    for i in range(files):
        folder = root / "images" / f"{i // per_id:06d}"
        if i % per_id == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])
    marker.write_text(str(files))
    print(f"# generated {files} files in {time.perf_counter() - tic:.1f} s -> {root}", flush=True)
    return root


def make_crop_pool(root: Path, files: int) -> Path:
    """``files`` JPEGs of person-crop size (128x64 to 256x128), smooth colour fields, 20 per identity."""
    marker = root / ".generated"
    if marker.exists() and marker.read_text() == str(files):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:128].astype(np.float32)
    for i in range(files):
        h = int(rng.integers(128, 257))
        w = h // 2
        base = rng.uniform(0, 255, size=(1, 1, 3)).astype(np.float32)
        slope = rng.uniform(-0.6, 0.6, size=(1, 1, 3)).astype(np.float32)
        array = np.clip(base + slope * (yy[:h, :w, None] + xx[:h, :w, None]), 0, 255).astype(np.uint8)
        folder = root / "images" / f"{i // 20:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{i:07d}.jpg", quality=90)
    marker.write_text(str(files))
    return root


def run_child(code: str, pythonpath: Path | None) -> dict:
    """Run ``code`` in a fresh interpreter (clean memory, imports counted); it prints one JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, cwd="/tmp")
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "wall_s": round(wall, 2)}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 2)
    return result


INDEX = """
import json, time
tic = time.perf_counter()
from saip_bench.data.pool_index import load_index
index = load_index({root!r}, rebuild=True, progress=False)
print(json.dumps({{"build_s": round(time.perf_counter() - tic, 2), "images": len(index.train)}}))
"""

FINGERPRINT = """
import json, time
from saip_bench.bench.provenance import data_fingerprint
tic = time.perf_counter()
value = data_fingerprint({root!r})
print(json.dumps({{"fingerprint_s": round(time.perf_counter() - tic, 2), "value": value}}))
"""

STARTUP = """
import time
T0 = time.perf_counter()
import json, shutil
import saip_bench
from saip_bench.pretrain.api import run_training
shutil.rmtree({out!r}, ignore_errors=True)
result, trainer = run_training({method!r}, "vit_tiny", "quick", {root!r}, {out!r}, steps=1, progress=False,
                               overrides={{"num_workers": 2, "checkpoint_every": 1000}})
print(json.dumps({{"first_step_s": round(time.perf_counter() - T0, 2), "step": result.step,
                  "loss": round(result.last["loss"], 4)}}))
"""

LOADER = """
import json, time
from torch.utils.data import DataLoader
from saip_bench.pretrain.data import PretrainDataset, PretrainFolder, ResumableBatchSampler, collate
from saip_bench.pretrain.trainer import load_preset

train, _ = load_preset("saip", "paper")
folder = PretrainFolder.scan({root!r}, progress=False)
dataset = PretrainDataset(folder, train.source_size, 0, with_backgrounds=True,
                          background_size=train.background_size)
sampler = ResumableBatchSampler(len(dataset), train.batch_size, seed=0, total=10_000)
loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers={workers})
iterator = iter(loader)
for _ in range(3):
    next(iterator)
tic, images = time.perf_counter(), 0
for _ in range({batches}):
    images += next(iterator)["image"].shape[0]
seconds = time.perf_counter() - tic
print(json.dumps({{"images_per_s": round(images / seconds, 1), "images": images, "workers": {workers},
                  "batch": train.batch_size, "source_size": list(train.source_size),
                  "background_size": list(train.background_size)}}))
"""

MEMORY = """
import json, os
from torch.utils.data import DataLoader
from saip_bench.pretrain.data import PretrainDataset, PretrainFolder, ResumableBatchSampler, collate

def status(pid):
    fields = {{}}
    with open(f"/proc/{{pid}}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024
    with open(f"/proc/{{pid}}/smaps_rollup") as handle:
        private = sum(int(line.split()[1]) for line in handle if line.startswith("Private_"))
    fields["USS"] = private / 1024
    return {{k: round(v, 1) for k, v in fields.items()}}

def full_collection(_worker):
    # what a long-running worker meets sooner or later: a full garbage collection touches every tracked
    # object the parent left (e.g. a list of a million Paths), so copy-on-write duplicates their pages
    import gc
    gc.collect()

folder = PretrainFolder.scan({root!r})
dataset = PretrainDataset(folder, (128, 64), 0)
sampler = ResumableBatchSampler(len(dataset), 16, seed=0, total=10_000)
loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=2,
                    worker_init_fn=full_collection)
iterator = iter(loader)
for _ in range(20):
    next(iterator)
workers = [status(w.pid) for w in iterator._workers]
main = status(os.getpid())
print(json.dumps({{"main": main, "workers": workers}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--pool", type=Path, default=None, help="default /tmp/saip_pool_<files>")
    parser.add_argument("--code", type=Path, default=None, help="another checkout to measure (before)")
    parser.add_argument("--method", default="mae", help="pretraining method of the start-up figure")
    parser.add_argument("--skip", nargs="*", default=[], choices=["index", "startup", "loader", "memory"])
    parser.add_argument("--loader-files", type=int, default=2000, help="crop-sized JPEGs of the loader pool")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument(
        "--pairs", type=int, default=0,
        help="only this: N back-to-back start-ups (warm index) of --code and of this checkout, alternating",
    )
    args = parser.parse_args()
    if args.pairs:
        if args.code is None:
            parser.error("--pairs needs --code (the other checkout)")
        pool = make_pool(args.pool or Path(f"/tmp/saip_pool_{args.files}"), args.files)
        code = STARTUP.format(method=args.method, root=str(pool), out=f"/tmp/saip_pool_run_{args.files}")
        run_child(code, None)  # builds the index if missing: later runs are warm
        for pair in range(args.pairs):
            before, after = run_child(code, args.code), run_child(code, None)
            print(f"pair {pair}: first step before {before.get('first_step_s')} s, "
                  f"after {after.get('first_step_s')} s", flush=True)
        return
    small = max(1000, args.files // 10)
    pool = make_pool(args.pool or Path(f"/tmp/saip_pool_{args.files}"), args.files)
    small_pool = make_pool(Path(f"/tmp/saip_pool_{small}"), small)
    label = "before" if args.code else "after"
    has_index = ((args.code or REPO) / "saip_bench" / "data" / "pool_index.py").is_file()
    rows: list[tuple[str, dict]] = []

    def drop_index(root: Path) -> None:
        shutil.rmtree(root / ".saip-index", ignore_errors=True)

    if "index" not in args.skip:
        if has_index:
            drop_index(pool)
            fingerprint = FINGERPRINT.format(root=str(pool))
            rows.append(("fingerprint, no index (walk)", run_child(fingerprint, args.code)))
            rows.append(("index build (rebuild)", run_child(INDEX.format(root=str(pool)), args.code)))
            rows.append(("fingerprint, with index", run_child(fingerprint, args.code)))
        else:
            rows.append(("fingerprint (walk)", run_child(FINGERPRINT.format(root=str(pool)), args.code)))
    if "startup" not in args.skip:
        out = f"/tmp/saip_pool_run_{args.files}"
        code = STARTUP.format(method=args.method, root=str(pool), out=out)
        if has_index:
            drop_index(pool)
            rows.append((f"start-up to first step, {args.method}, cold (builds the index)",
                         run_child(code, args.code)))
            rows.append((f"start-up to first step, {args.method}, warm (index exists)",
                         run_child(code, args.code)))
            if args.method != "saip":
                saip = STARTUP.format(method="saip", root=str(pool), out=out)
                rows.append(("start-up to first step, saip, warm (pool backgrounds)",
                             run_child(saip, args.code)))
        else:
            rows.append((f"start-up to first step, {args.method}", run_child(code, args.code)))
    if "loader" not in args.skip:
        crops = make_crop_pool(Path(f"/tmp/saip_crops_{args.loader_files}"), args.loader_files)
        code = LOADER.format(root=str(crops), workers=args.loader_workers, batches=args.loader_batches)
        rows.append((f"loader images/s, saip paper views, {args.loader_workers} workers, "
                     f"{args.loader_files} crop-sized files", run_child(code, args.code)))
    if "memory" not in args.skip:
        for root in (small_pool, pool):
            count = small if root == small_pool else args.files
            rows.append((f"loader memory, 2 workers, {count} files",
                         run_child(MEMORY.format(root=str(root)), args.code)))
    print(f"\n## pool index benchmark ({label}: {args.code or REPO}), {args.files} files, "
          f"{os.cpu_count()} CPUs\n")
    print("| measurement | result |\n|---|---|")
    for name, result in rows:
        print(f"| {name} | {json.dumps(result, sort_keys=True)} |")


if __name__ == "__main__":
    main()
