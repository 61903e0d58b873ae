"""``generate_world``: write every dataset of the synthetic world, cached by a content key."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from saip_bench.data.synth import export_attr, export_reid, export_scenes
from saip_bench.data.synth.common import ExportContext
from saip_bench.data.synth.io import contact_sheet, write_json
from saip_bench.data.synth.presets import Preset, get_preset
from saip_bench.errors import UserError
from saip_bench.utils import atomic_write_json, console

FORMAT_VERSION = 1
WORLD_FILE = ".world.json"
SIDE_DIR = ".world"  # sidecar facts (identity of every image) for tests and debugging; not part of a dataset

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
        "market1501": p.market_train_ids * p.market_train_per_id + p.market_test_ids * (2 + p.market_gallery_per_id)
        + p.market_junk + p.market_distractors,
        "msmt17": p.msmt_train_ids * p.msmt_train_per_id + p.msmt_test_ids * (2 + p.msmt_gallery_per_id),
        "cuhk_pedes": int(sum(p.cuhk_ids) * (p.pedes_per_id + 0.3)),
        "icfg_pedes": int(sum(p.icfg_ids) * (p.pedes_per_id + 0.3)),
        "pa100k": sum(p.pa100k), "peta": p.peta_images, "coco": sum(p.coco),
        "coco_wholebody": sum(p.coco_wholebody), "lip": sum(p.lip), "cihp": sum(p.cihp),
        "crowdhuman": sum(p.crowdhuman), "fashionpedia": sum(p.fashionpedia),
        "pretrain": p.pretrain_ids * p.pretrain_per_id + p.pretrain_backgrounds,
    }[name]


def generate_world(out: Path | str, preset: str = "tiny", seed: int = 0, datasets: list[str] | None = None,
                   force: bool = False, contact_sheets: bool = True) -> Path:
    """Write ``<out>/<name>/`` for each dataset (all 12 + ``pretrain`` by default); return ``out``.

    A dataset is skipped when ``<out>/.world.json`` records the same (preset, seed, code version) for it
    and its folder exists, unless ``force``. Same seed + preset -> byte-identical files.
    """
    out = Path(out)
    spec = get_preset(preset)
    names = list(EXPORTERS) if not datasets else list(dict.fromkeys(datasets))
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UserError(f"unknown synthetic dataset(s) {', '.join(unknown)}; known: {', '.join(EXPORTERS)}")
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / WORLD_FILE
    state = _read_state(state_path)
    key = {"format": FORMAT_VERSION, "preset": spec.name, "seed": int(seed), "code": code_version()}
    if any(state.get(k) != v for k, v in key.items()):
        state = dict(key, datasets={})
    todo = [n for n in names if force or not (out / n).is_dir()
            or state["datasets"].get(n, {}).get("contact_sheet", False) < contact_sheets
            or n not in state["datasets"]]
    if not todo:
        console.print(f"[green]synthetic world up to date[/] at {out} (preset {spec.name}, seed {seed})")
        return out
    columns = (TextColumn("[bold]{task.description:<15}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        for name in todo:
            task = progress.add_task(name, total=planned_images(spec, name))
            started = time.perf_counter()
            root = out / name
            if root.exists():
                shutil.rmtree(root)
            root.mkdir(parents=True)
            ctx = ExportContext(root=root, preset=spec, seed=int(seed), name=name,
                                tick=lambda n, t=task: progress.advance(t, n))
            EXPORTERS[name](ctx)
            if contact_sheets:
                contact_sheet(root / "contact_sheet.png", ctx.tiles)
            if ctx.manifest:
                write_json(out / SIDE_DIR / f"{name}.json", ctx.manifest)
            progress.update(task, completed=progress.tasks[task].total)
            state["datasets"][name] = {"contact_sheet": bool(contact_sheets),
                                       "seconds": round(time.perf_counter() - started, 2)}
            atomic_write_json(state_path, {k: state[k] for k in sorted(state) if k != "seconds"})
    return out


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
        if isinstance(state, dict) and isinstance(state.get("datasets"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"datasets": {}}
