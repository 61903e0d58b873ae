"""``generate_world``: write every dataset of the synthetic world, cached by a content key."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing.managers import SyncManager
from pathlib import Path
from queue import Empty

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from saip_bench.data.synth import export_attr, export_reid, export_scenes
from saip_bench.data.synth.common import ExportContext
from saip_bench.data.synth.io import contact_sheet, write_json
from saip_bench.data.synth.presets import Preset, get_preset
from saip_bench.errors import UserError
from saip_bench.locks import default_wait, die_with_parent, owner_lock
from saip_bench.utils import atomic_write_json, console

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WORLD_FILE = ".world.json"
LOCK_FILE = ".world.lock"  # owner lock of a world being generated (pid and host inside)
WORLD_WAIT_S = 6 * 3600.0  # how long a second process waits for another one generating the same world
SIDE_DIR = ".world"
PARALLEL_MIN_IMAGES = (
    1500  # sidecar facts (identity of every image) for tests and debugging; not part of a dataset
)

EXPORTERS: dict[str, Callable[[ExportContext], None]] = {
    "market1501": export_reid.export_market1501,
    "msmt17": export_reid.export_msmt17,
    "cuhk_pedes": export_reid.export_cuhk_pedes,
    "icfg_pedes": export_reid.export_icfg_pedes,
    "pa100k": export_attr.export_pa100k,
    "peta": export_attr.export_peta,
    "coco": export_scenes.export_coco,
    "coco_wholebody": export_scenes.export_coco_wholebody,
    "lip": export_scenes.export_lip,
    "cihp": export_scenes.export_cihp,
    "crowdhuman": export_scenes.export_crowdhuman,
    "fashionpedia": export_scenes.export_fashionpedia,
    "pretrain": export_reid.export_pretrain,
}
DATASETS = [name for name in EXPORTERS if name != "pretrain"]


def code_version() -> str:
    """Hash of the synth package's source: any change to the generator invalidates the cache."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def planned_images(preset: Preset, name: str) -> int:
    """Images a dataset will write (for the progress bar)."""
    p = preset
    return {
        "market1501": p.market_train_ids * p.market_train_per_id
        + p.market_test_ids * (2 + p.market_gallery_per_id)
        + p.market_junk
        + p.market_distractors,
        "msmt17": p.msmt_train_ids * p.msmt_train_per_id + p.msmt_test_ids * (2 + p.msmt_gallery_per_id),
        "cuhk_pedes": int(sum(p.cuhk_ids) * (p.pedes_per_id + 0.3)),
        "icfg_pedes": int(sum(p.icfg_ids) * (p.pedes_per_id + 0.3)),
        "pa100k": sum(p.pa100k),
        "peta": p.peta_images,
        "coco": sum(p.coco),
        "coco_wholebody": sum(p.coco_wholebody),
        "lip": sum(p.lip),
        "cihp": sum(p.cihp),
        "crowdhuman": sum(p.crowdhuman),
        "fashionpedia": sum(p.fashionpedia),
        "pretrain": p.pretrain_ids * p.pretrain_per_id + p.pretrain_backgrounds,
    }[name]


def generate_world(
    out: Path | str,
    preset: str = "tiny",
    seed: int = 0,
    datasets: list[str] | None = None,
    force: bool = False,
    contact_sheets: bool = True,
    workers: int | None = None,
) -> Path:
    """Write ``<out>/<name>/`` for each dataset (all 12 + ``pretrain`` by default); return ``out``.

    A dataset is skipped when ``<out>/.world.json`` records the same (preset, seed, code version) for it
    and its folder exists, unless ``force``. Same seed + preset -> byte-identical files, whatever the
    number of ``workers`` (processes, one dataset each at a time; default: 2 for worlds of at least
    ``PARALLEL_MIN_IMAGES`` images, else 1).
    """
    out = Path(out)
    spec = get_preset(preset)
    names = list(EXPORTERS) if not datasets else list(dict.fromkeys(datasets))
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UserError(f"unknown synthetic dataset(s) {', '.join(unknown)}; known: {', '.join(EXPORTERS)}")
    out.mkdir(parents=True, exist_ok=True)
    # One generator per world folder: a second process waits, then finds the datasets written (issue 27:
    # two generators deleted each other's folders and one died with a raw FileExistsError).
    with owner_lock(out / LOCK_FILE, f"synthetic world {out}", f"generating the {spec.name} world",
                    wait=default_wait(WORLD_WAIT_S), hint="another process is generating it; wait for it"):
        return _generate_locked(out, spec, names, seed, force, contact_sheets, workers)


def _generate_locked(out: Path, spec: Preset, names: list[str], seed: int, force: bool, contact_sheets: bool,
                     workers: int | None) -> Path:
    """``generate_world`` under the world's owner lock (the state is read only once the lock is ours)."""
    state_path = out / WORLD_FILE
    state = _read_state(state_path)
    key = {"format": FORMAT_VERSION, "preset": spec.name, "seed": int(seed), "code": code_version()}
    if any(state.get(k) != v for k, v in key.items()):
        state = dict(key, datasets={})
    todo = [
        n
        for n in names
        if force
        or not (out / n).is_dir()
        or state["datasets"].get(n, {}).get("contact_sheet", False) < contact_sheets
        or n not in state["datasets"]
    ]
    if not todo:
        log.info(f"synthetic world up to date at {out} (preset {spec.name}, seed {seed})")
        return out
    columns = (
        TextColumn("[bold]{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if workers is None:  # processes pay off only for big worlds (start-up costs a few seconds)
        big = sum(planned_images(spec, n) for n in todo) >= PARALLEL_MIN_IMAGES
        workers = min(2, os.cpu_count() or 1) if big else 1
    n_workers = max(1, min(len(todo), workers))
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {name: progress.add_task(name, total=planned_images(spec, name)) for name in todo}
        for name in todo:
            if (out / name).exists():
                shutil.rmtree(out / name)
        jobs = [(str(out), spec.name, int(seed), name, contact_sheets) for name in todo]
        if n_workers == 1:
            for job in jobs:
                done = _export_one(*job, tick=lambda n, t=tasks[job[3]]: progress.advance(t, n))
                _record(progress, tasks, state, state_path, done)
        else:  # datasets are independent streams: run them side by side, same bytes as serially
            context = _worker_context()
            manager = SyncManager(ctx=context)
            manager.start(die_with_parent, (os.getpid(),))  # helpers die with us (a kill -9 included)
            with manager:
                queue = manager.Queue()
                with ProcessPoolExecutor(n_workers, mp_context=context, initializer=die_with_parent,
                                         initargs=(os.getpid(),)) as pool:
                    futures = [pool.submit(_export_one, *job, queue=queue) for job in jobs]
                    pending = set(futures)
                    while pending:
                        finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                        _drain(queue, progress, tasks)
                        for future in finished:
                            _record(progress, tasks, state, state_path, future.result())
                    _drain(queue, progress, tasks)
    return out


def _worker_context() -> mp.context.BaseContext:
    """Workers forked from a clean server process (not from the caller, which may hold OpenMP/OpenCV
    thread pools that do not survive ``fork``); spawn where forkserver does not exist."""
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return mp.get_context("spawn")


def _export_one(
    out: str,
    preset: str,
    seed: int,
    name: str,
    contact_sheets: bool,
    tick: Callable[[int], None] | None = None,
    queue=None,
) -> tuple[str, bool, float, dict]:
    """Write one dataset root (runs in a worker process when parallel)."""
    started = time.perf_counter()
    root = Path(out) / name
    root.mkdir(parents=True)
    if tick is None:

        def tick(n: int) -> None:
            queue.put((name, n))

    ctx = ExportContext(root=root, preset=get_preset(preset), seed=seed, name=name, tick=tick)
    EXPORTERS[name](ctx)
    if contact_sheets:
        contact_sheet(root / "contact_sheet.png", ctx.tiles)
    if ctx.manifest:
        write_json(Path(out) / SIDE_DIR / f"{name}.json", ctx.manifest)
    return name, contact_sheets, round(time.perf_counter() - started, 2), ctx.counts


def _drain(queue, progress: Progress, tasks: dict) -> None:
    while True:
        try:
            name, n = queue.get_nowait()
        except Empty:
            return
        progress.advance(tasks[name], n)


def _record(
    progress: Progress, tasks: dict, state: dict, state_path: Path, done: tuple[str, bool, float, dict]
) -> None:
    name, sheets, seconds, counts = done
    progress.update(tasks[name], completed=progress.tasks[tasks[name]].total)
    state["datasets"][name] = {"contact_sheet": bool(sheets), "seconds": seconds}
    if counts:  # what the reader must find; `saip-bench data verify` compares against it
        state["datasets"][name]["counts"] = counts
    atomic_write_json(state_path, state)


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
        if isinstance(state, dict) and isinstance(state.get("datasets"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"datasets": {}}
