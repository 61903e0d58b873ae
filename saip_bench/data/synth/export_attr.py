"""Attribute datasets: PA-100K (``annotation.mat``) and PETA (``PETA.mat`` + PETAzs pickle)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from saip_bench.data import vocab as _official
from saip_bench.data.synth.appearance import Appearance, pa100k_labels, peta_labels, sample_appearance
from saip_bench.data.synth.common import ExportContext, cameras, person_crop
from saip_bench.data.synth.io import save_image, write_mat, write_pickle
from saip_bench.data.synth.vocab import PA100K_ATTRIBUTES, PETA_ATTRIBUTES, PETA_EVAL_COUNT

VIEWS = ("front", "side", "back")
PETA_GROUP_ORDER = list(_official.PETA_GROUP_ORDER)


def varied_population(
    rng: np.random.Generator,
    n: int,
    labels: Callable[[Appearance], list[int]],
    columns: list[int],
    tries: int = 4000,
) -> list[Appearance]:
    """``n`` identities such that every evaluated column has both a 0 and a 1 (when n >= 2).

    A constant column would make mA undefined/trivial; rare attributes are swapped in from extra draws,
    never changing a column that is already varied into a constant one.
    """
    pop = [sample_appearance(rng) for _ in range(n)]
    if n < 2:
        return pop
    mat = np.array([labels(a) for a in pop])[:, columns]
    for _ in range(tries):
        bad = [c for c in range(mat.shape[1]) if mat[:, c].min() == mat[:, c].max()]
        if not bad:
            break
        c = bad[0]
        want = 1 - mat[0, c]
        cand = sample_appearance(rng)
        row = np.array(labels(cand))[columns]
        if row[c] != want:
            continue
        for slot in rng.permutation(n):
            trial = mat.copy()
            trial[slot] = row
            ok = all(
                trial[:, k].min() != trial[:, k].max()
                for k in range(mat.shape[1])
                if mat[:, k].min() != mat[:, k].max()
            )
            if ok:
                pop[slot], mat = cand, trial
                break
    return pop


def _pa_eval_labels(a: Appearance) -> list[int]:
    return pa100k_labels(a, "front")


def export_pa100k(ctx: ExportContext) -> None:
    """data/<000001..>.jpg + annotation.mat (attributes 26x1 cell, *_images_name cells, *_label uint8)."""
    p = ctx.preset
    cams = cameras(ctx.rng("cameras"), 6)
    pool = ctx.backgrounds()
    view_cols = [PA100K_ATTRIBUTES.index(v) for v in ("Front", "Side", "Back")]
    identity_cols = [k for k in range(len(PA100K_ATTRIBUTES)) if k not in view_cols]
    mat: dict[str, object] = {}
    index = 0
    images: dict[str, dict] = {}
    for split, n in zip(("train", "val", "test"), p.pa100k, strict=True):
        people = varied_population(ctx.rng("identities", split), n, _pa_eval_labels, identity_cols)
        names, labels = [], []
        rng = ctx.rng("views", split)
        start = int(rng.integers(3))
        for k, a in enumerate(people):
            index += 1
            view = VIEWS[(start + k) % 3]
            r = ctx.rng("img", index)
            img, _ = person_crop(a, r, p.crop_hw, pool, cams[int(r.integers(len(cams)))], view=view)
            fname = f"{index:06d}.jpg"
            save_image(ctx.root / "data" / fname, img)
            names.append(fname)
            lab = pa100k_labels(a, view)
            labels.append(lab)
            images[fname] = {"appearance": a.to_json(), "view": view}
            ctx.tick(1)
            if len(ctx.tiles) < 12:
                on = [PA100K_ATTRIBUTES[j] for j, v in enumerate(lab) if v and j not in view_cols]
                ctx.add_tile(img, f"{view} " + ",".join(on))
        mat[f"{split}_images_name"] = _cell(names)
        ctx.counts[split] = {"images": len(names)}
        mat[f"{split}_label"] = np.asarray(labels, dtype=np.uint8)
    mat["attributes"] = _cell(PA100K_ATTRIBUTES)
    write_mat(ctx.root / "annotation.mat", mat)
    ctx.manifest = {"images": images}


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = np.array([s])
    return cell


def export_peta(ctx: ExportContext) -> None:
    """images/%05d.png + PETA.mat (struct peta: data, attribute, selected_attribute, partion_attribute)
    + the PETAzs pickle ``dataset_zs_run0.pkl`` with an identity-disjoint split."""
    p = ctx.preset
    cams = cameras(ctx.rng("cameras"), 10)
    pool = ctx.backgrounds()
    eval_cols = list(range(PETA_EVAL_COUNT))
    people = varied_population(ctx.rng("identities"), p.peta_ids, peta_labels, eval_cols)
    rng = ctx.rng("layout")
    # images per identity: at least one each, the rest spread at random
    owner = list(range(p.peta_ids)) + rng.integers(0, p.peta_ids, max(0, p.peta_images - p.peta_ids)).tolist()
    owner = sorted(owner)
    sub_of_id = rng.integers(1, 11, p.peta_ids)  # sub-dataset 1..10 (3DPeS ... VIPeR)
    rows = []
    images: dict[str, int] = {}
    within: dict[int, int] = {}
    for k, ident in enumerate(owner):
        a = people[ident]
        r = ctx.rng("img", k)
        cam = int(sub_of_id[ident]) - 1
        img, _ = person_crop(a, r, p.crop_hw, pool, cams[cam], view=VIEWS[k % 3])
        fname = f"{k + 1:05d}.png"
        save_image(ctx.root / "images" / fname, img)
        images[fname] = ident
        sub = int(sub_of_id[ident])
        within.setdefault(ident, len([1 for j in within if sub_of_id[j] == sub]) + 1)
        rows.append([k + 1, ident + 1, sub, within[ident], *peta_labels(a)])
        ctx.tick(1)
        if len(ctx.tiles) < 12:
            lab = peta_labels(a)
            ctx.add_tile(img, ",".join(PETA_ATTRIBUTES[j] for j in eval_cols if lab[j])[:80])
    data = np.asarray(rows, dtype=np.uint16)
    n = len(rows)
    n_train, n_val = round(n * 0.5), round(n * 0.1)
    dt = [("train", "O"), ("val", "O"), ("test", "O")]
    partitions = np.empty((5, 1), dtype=object)
    for k in range(5):
        perm = rng.permutation(n) + 1
        rec = np.empty((1, 1), dtype=dt)
        rec[0, 0] = (
            perm[:n_train].astype(np.uint16).reshape(-1, 1),
            perm[n_train : n_train + n_val].astype(np.uint16).reshape(-1, 1),
            perm[n_train + n_val :].astype(np.uint16).reshape(-1, 1),
        )
        partitions[k, 0] = rec
    peta = np.empty(
        (1, 1),
        dtype=[("data", "O"), ("attribute", "O"), ("selected_attribute", "O"), ("partion_attribute", "O")],
    )
    peta[0, 0] = (
        data,
        _cell(PETA_ATTRIBUTES),
        np.arange(5, 5 + PETA_EVAL_COUNT, dtype=np.uint8).reshape(1, -1),
        partitions,
    )
    write_mat(ctx.root / "PETA.mat", {"peta": peta})
    _write_peta_zs(ctx, data, rng)
    ctx.manifest = {"identities": [a.to_json() for a in people], "images": images}


def _write_peta_zs(ctx: ExportContext, data: np.ndarray, rng: np.random.Generator) -> None:
    """Rethinking-of-PAR PETAzs: plain dict, 35 evaluated attributes, single 0-based index arrays."""
    ids = np.unique(data[:, 1])
    perm = rng.permutation(ids)
    n_ids = len(ids)
    test_ids = set(perm[: max(1, round(n_ids * 0.3))].tolist())
    val_ids = set(perm[len(test_ids) : len(test_ids) + max(1, round(n_ids * 0.1))].tolist())
    ident = data[:, 1]
    idx = np.arange(len(data))
    test = idx[np.isin(ident, list(test_ids))]
    val = idx[np.isin(ident, list(val_ids))]
    train = idx[~np.isin(ident, list(test_ids | val_ids))]
    trainval = np.sort(np.concatenate([train, val]))
    labels = data[:, 4 : 4 + PETA_EVAL_COUNT][:, PETA_GROUP_ORDER].astype(np.int64)
    dataset = {
        "description": "peta",
        "reorder": "group_order",
        "root": "images",
        "image_name": [f"{int(i):05d}.png" for i in data[:, 0]],
        "label": labels,
        "attr_name": [PETA_ATTRIBUTES[i] for i in PETA_GROUP_ORDER],
        "partition": {"train": train, "val": val, "trainval": trainval, "test": test},
        "weight_train": labels[train].mean(0),
        "weight_trainval": labels[trainval].mean(0),
    }
    write_pickle(ctx.root / "dataset_zs_run0.pkl", dataset)
