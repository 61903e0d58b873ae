"""Identity datasets: Market-1501, MSMT17 (V2), CUHK-PEDES, ICFG-PEDES and the pretraining folder."""

from __future__ import annotations

import re

import numpy as np

from saip_bench.data.synth.appearance import make_caption, view_name
from saip_bench.data.synth.common import ExportContext, cameras, identities, main_person, person_crop
from saip_bench.data.synth.io import draw_keypoints, save_image, write_json, write_lines
from saip_bench.data.synth.scene import make_background
from saip_bench.data.synth.vocab import COCO_SKELETON

VIEWS = ("front", "back", "side")


def _views_for(rng: np.random.Generator, n: int) -> list[str]:
    start = int(rng.integers(3))
    return [VIEWS[(start + k) % 3] for k in range(n)]


# ------------------------------------------------------------------------------------------- Market


def export_market1501(ctx: ExportContext) -> None:
    """``PPPP_cCsS_FFFFFF_BB.jpg`` in bounding_box_train/test and query; junk ``-1``, distractors ``0000``."""
    p = ctx.preset
    rng = ctx.rng("layout")
    people = identities(ctx.rng("identities"), p.market_train_ids + p.market_test_ids)
    cams = cameras(ctx.rng("cameras"), 6)
    pids = sorted(rng.choice(np.arange(1, 1502), size=len(people), replace=False).tolist())
    order = rng.permutation(len(people))
    train_idx, test_idx = (
        sorted(order[: p.market_train_ids].tolist()),
        sorted(order[p.market_train_ids :].tolist()),
    )
    pool = ctx.backgrounds()
    used: set[str] = set()
    images: dict[str, int] = {}

    def name(pid: int, cam: int) -> str:
        while True:
            seq, frame, box = int(rng.integers(1, 7)), int(rng.integers(1, 200000)), int(rng.integers(0, 4))
            pid_s = "-1" if pid < 0 else f"{pid:04d}"
            n = f"{pid_s}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg"
            if n not in used:
                used.add(n)
                return n

    def write(
        folder: str,
        ident: int | None,
        pid: int,
        cam: int,
        view: str | None = None,
        partial: str | None = None,
    ) -> None:
        r = ctx.rng("img", len(used))
        a = people[ident] if ident is not None else None
        if a is None:  # distractor: a passer-by not in the dataset, often badly cropped
            from saip_bench.data.synth.appearance import sample_appearance

            a = sample_appearance(r)
            partial = partial or ("top" if r.random() < 0.5 else None)
        img, _scene = person_crop(a, r, p.crop_hw, pool, cams[cam], view=view, partial=partial)
        fname = name(pid, cam)
        save_image(ctx.root / folder / fname, img)
        images[f"{folder}/{fname}"] = -1 if ident is None else int(ident)
        ctx.tick(1)
        if len(ctx.tiles) < 12 and (ident is None or len(images) % 3 == 0):
            ctx.add_tile(img, f"{folder.replace('bounding_box_', '')} {fname[:9]}")

    for i in train_idx:
        cam_ids = rng.choice(6, size=min(6, max(2, p.market_train_per_id // 2)), replace=False)
        for k, view in enumerate(_views_for(rng, p.market_train_per_id)):
            write("bounding_box_train", i, pids[i], int(cam_ids[k % len(cam_ids)]), view)
    for i in test_idx:
        cam_ids = rng.choice(6, size=4, replace=False).tolist()
        query_cams = cam_ids[:2]  # at most one query per camera, as in the official protocol
        for c in query_cams:
            write("query", i, pids[i], c)
        views = _views_for(rng, p.market_gallery_per_id)
        for k in range(p.market_gallery_per_id):
            cam = cam_ids[1:][k % 3]  # gallery covers query cameras too (same-camera matches are filtered)
            write("bounding_box_test", i, pids[i], cam, views[k])
    for k in range(p.market_junk):
        i = test_idx[k % len(test_idx)]
        write("bounding_box_test", i, -1, int(rng.integers(6)), partial=("top", "bottom")[k % 2])
    for _ in range(p.market_distractors):
        write("bounding_box_test", None, 0, int(rng.integers(6)))
    ctx.manifest = {"identities": [a.to_json() for a in people], "images": images}
    gallery_ids = len(test_idx) + (1 if p.market_distractors else 0)  # pid 0 = the distractors
    ctx.counts = {
        "train": {"images": len(train_idx) * p.market_train_per_id, "identities": len(train_idx)},
        "query": {"images": 2 * len(test_idx), "identities": len(test_idx)},
        "gallery": {  # junk (-1) is dropped by readers
            "images": len(test_idx) * p.market_gallery_per_id + p.market_distractors,
            "identities": gallery_ids,
        },
    }


# ------------------------------------------------------------------------------------------- MSMT17


def _msmt_name(rng: np.random.Generator, pid: int, index: int, cam: int) -> str:
    date = ("0113", "0114", "0302", "0303")[int(rng.integers(4))]
    tod = ("morning", "noon", "afternoon")[int(rng.integers(3))]
    frame, box = int(rng.integers(1, 9999)), int(rng.integers(0, 3))
    return f"{pid:04d}_{index:03d}_{cam + 1:02d}_{date}{tod}_{frame:04d}_{box}.jpg"


def export_msmt17(ctx: ExportContext) -> None:
    """MSMT17_V2: mask_train_v2/<pid>/..., mask_test_v2/<pid>/..., list_{train,val,query,gallery}.txt."""
    p = ctx.preset
    rng = ctx.rng("layout")
    people = identities(ctx.rng("identities"), p.msmt_train_ids + p.msmt_test_ids)
    cams = cameras(ctx.rng("cameras"), 15)
    pool = ctx.backgrounds()
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    images: dict[str, int] = {}
    count = 0
    for split_pid, ident in enumerate(range(p.msmt_train_ids)):
        n = p.msmt_train_per_id
        cam_ids = rng.choice(15, size=3, replace=False)
        for k, view in enumerate(_views_for(rng, n)):
            r = ctx.rng("img", count)
            count += 1
            img, _ = person_crop(people[ident], r, p.crop_hw, pool, cams[int(cam_ids[k % 3])], view=view)
            rel = f"{split_pid:04d}/{_msmt_name(rng, split_pid, k, int(cam_ids[k % 3]))}"
            save_image(ctx.root / "mask_train_v2" / rel, img)
            images[f"mask_train_v2/{rel}"] = ident
            # list_val is a held-out part of the training identities' images
            lists["val" if k == n - 1 and split_pid % 4 == 0 else "train"].append(f"{rel} {split_pid}")
            ctx.tick(1)
            if len(ctx.tiles) < 6:
                ctx.add_tile(img, f"train {rel[:14]}")
    for split_pid in range(p.msmt_test_ids):
        ident = p.msmt_train_ids + split_pid
        cam_ids = rng.choice(15, size=4, replace=False)
        n = 2 + p.msmt_gallery_per_id
        for k, view in enumerate(_views_for(rng, n)):
            r = ctx.rng("img", count)
            count += 1
            cam = int(cam_ids[k % 4])
            img, _ = person_crop(people[ident], r, p.crop_hw, pool, cams[cam], view=view)
            rel = f"{split_pid:04d}/{_msmt_name(rng, split_pid, k, cam)}"
            save_image(ctx.root / "mask_test_v2" / rel, img)
            images[f"mask_test_v2/{rel}"] = ident
            lists["query" if k < 2 else "gallery"].append(f"{rel} {split_pid}")
            ctx.tick(1)
            if len(ctx.tiles) < 12:
                ctx.add_tile(img, f"{'query' if k < 2 else 'gallery'} {rel[:14]}")
    for split, lines in lists.items():
        write_lines(ctx.root / f"list_{split}.txt", lines)
        ctx.counts[split] = {"images": len(lines), "identities": len({line.split()[1] for line in lines})}
    ctx.manifest = {"identities": [a.to_json() for a in people], "images": images}


# -------------------------------------------------------------------------------------- text-to-image


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", caption.lower())


def _pedes(ctx: ExportContext, style: str, split_ids: list[tuple[str, int]], id_base: int) -> None:
    p = ctx.preset
    rng = ctx.rng("layout")
    n_ids = sum(n for _, n in split_ids)
    people = identities(ctx.rng("identities"), n_ids)
    cams = cameras(ctx.rng("cameras"), 8)
    pool = ctx.backgrounds()
    entries = []
    images: dict[str, int] = {}
    ident = 0
    count = 0
    extra_caption_done = single_image_done = False
    for split, n in split_ids:
        for _ in range(n):
            a = people[ident]
            n_img = p.pedes_per_id + int(rng.random() < 0.3)
            if not single_image_done and split == "train":
                n_img, single_image_done = 1, True  # a few identities have a single image (as in CUHK-PEDES)
            for k, view in enumerate(_views_for(rng, n_img)):
                r = ctx.rng("img", count)
                count += 1
                cam = int(rng.integers(len(cams)))
                img, _ = person_crop(a, r, p.crop_hw, pool, cams[cam], view=view)
                if style == "cuhk":
                    folder = ("CUHK01", "CUHK03", "Market", "cam_a", "cam_b", "train_query", "test_query")[
                        int(rng.integers(7))
                    ]
                    ext = {"CUHK01": "png", "CUHK03": "png", "cam_a": "bmp", "cam_b": "bmp"}.get(
                        folder, "jpg"
                    )
                    if folder == "Market":
                        stem = f"{ident + 1:04d}_c{cam % 6 + 1}s1_{count:06d}_00"
                    elif folder in ("train_query", "test_query"):
                        stem = f"p{ident + 1}_s{count}"
                    else:
                        stem = f"{ident + 1:04d}{k:03d}"
                    file_path = f"{folder}/{stem}.{ext}"
                else:
                    file_path = f"{split}/{ident:04d}/{_msmt_name(rng, ident, k, cam)}"
                save_image(ctx.root / "imgs" / file_path, img)
                n_cap = 2 if style == "cuhk" else 1
                if style == "cuhk" and not extra_caption_done:
                    n_cap, extra_caption_done = 3, True  # some images have more than two captions
                captions = [make_caption(a, view_name(_yaw(view)), r, style) for _ in range(n_cap)]
                entries.append(
                    {
                        "split": split,
                        "captions": captions,
                        "file_path": file_path,
                        "processed_tokens": [_tokens(c) for c in captions],
                        "id": ident + id_base,
                    }
                )
                images[file_path] = ident
                ctx.tick(1)
                if len(ctx.tiles) < 8:
                    ctx.add_tile(img, captions[0][:60])
            ident += 1
    for split, _ in split_ids:
        rows = [e for e in entries if e["split"] == split]
        ctx.counts[split] = {
            "images": len(rows),
            "identities": len({e["id"] for e in rows}),
            "captions": sum(len(e["captions"]) for e in rows),
        }
    json_name = "reid_raw.json" if style == "cuhk" else "ICFG-PEDES.json"
    write_json(ctx.root / json_name, entries)
    ctx.manifest = {"identities": [a.to_json() for a in people], "images": images}


def _yaw(view: str) -> float:
    return {"front": 0.0, "back": 180.0, "side": 90.0}[view]


def export_cuhk_pedes(ctx: ExportContext) -> None:
    """imgs/<source>/... + reid_raw.json (ids 1-based, splits train/val/test, 2+ captions per image)."""
    tr, va, te = ctx.preset.cuhk_ids
    _pedes(ctx, "cuhk", [("train", tr), ("val", va), ("test", te)], id_base=1)


def export_icfg_pedes(ctx: ExportContext) -> None:
    """imgs/{train,test}/<pid>/<MSMT-style name> + ICFG-PEDES.json (train ids 0-based and contiguous)."""
    tr, te = ctx.preset.icfg_ids
    _pedes(ctx, "icfg", [("train", tr), ("test", te)], id_base=0)


# ------------------------------------------------------------------------------------------ pretrain


def export_pretrain(ctx: ExportContext) -> None:
    """images/<identity>/<file>.jpg (LUPerson-like crops), backgrounds/*.jpg, keypoints.json (17 COCO)."""
    p = ctx.preset
    people = identities(ctx.rng("identities"), p.pretrain_ids)
    cams = cameras(ctx.rng("cameras"), 12)
    pool = ctx.backgrounds()
    keypoints: dict[str, list[list[float]]] = {}
    count = 0
    for ident, a in enumerate(people):
        for k in range(p.pretrain_per_id):
            r = ctx.rng("img", count)
            count += 1
            img, scene = person_crop(
                a, r, p.crop_hw, pool, cams[int(r.integers(len(cams)))], scale=(0.6, 1.02), occluder_prob=0.25
            )
            rel = f"images/{ident:05d}/{ident:05d}_{k:02d}.jpg"
            save_image(ctx.root / rel, img)
            kps = scene.people[main_person(scene)].keypoints
            keypoints[rel] = [[round(float(x), 2), round(float(y), 2), int(v)] for x, y, v in kps]
            ctx.tick(1)
            if len(ctx.tiles) < 10:
                ctx.add_tile(draw_keypoints(img, kps, COCO_SKELETON), rel[7:18])
    rng = ctx.rng("backgrounds-out")
    bh, bw = p.background_hw
    for k in range(p.pretrain_backgrounds):
        bg = make_background(rng, bh, bw)
        save_image(ctx.root / "backgrounds" / f"bg_{k:05d}.jpg", bg)
        ctx.tick(1)
        if k < 2:
            ctx.add_tile(bg, f"background {k}")
    write_json(ctx.root / "keypoints.json", keypoints)
