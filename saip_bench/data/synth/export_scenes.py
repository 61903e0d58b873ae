"""Scene datasets: COCO keypoints, COCO-WholeBody, LIP, CIHP, CrowdHuman, Fashionpedia."""

from __future__ import annotations

import numpy as np

from saip_bench.data.synth.appearance import sample_appearance
from saip_bench.data.synth.common import ExportContext, crowd_scene, person_crop
from saip_bench.data.synth.fashionpedia_taxonomy import ATTRIBUTES, CATEGORIES
from saip_bench.data.synth.io import (
    colourise,
    draw_box,
    draw_keypoints,
    mask_bbox,
    mask_polygons,
    mask_rle_uncompressed,
    save_image,
    save_label_png,
    write_json,
    write_lines,
)
from saip_bench.data.synth.render import sample_pose
from saip_bench.data.synth.scene import (
    PersonSpec,
    SceneRender,
    apply_camera,
    background_crop,
    make_camera,
    render_scene,
)
from saip_bench.data.synth.vocab import COCO_KEYPOINTS, COCO_SKELETON

MIN_KPT_AREA = 40  # visible pixels below which a person is annotated with num_keypoints == 0 (as COCO does)

COCO_INFO = {
    "description": "saip-bench synthetic world (COCO person keypoints format)",
    "version": "1.0",
    "year": 2017,
    "contributor": "saip-bench",
    "url": "",
    "date_created": "2017/09/01",
}
COCO_LICENSES = [{"id": 1, "name": "Synthetic (procedurally generated)", "url": ""}]
COCO_CATEGORIES = [
    {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": COCO_KEYPOINTS,
        "skeleton": COCO_SKELETON,
    }
]


def _kp_list(kps: np.ndarray, as_int: bool = True) -> list:
    out: list = []
    for x, y, v in kps:
        if as_int:
            out += [round(x), round(y), int(v)] if v > 0 else [0, 0, 0]
        else:
            out += [round(float(x), 2), round(float(y), 2), float(v)] if v > 0 else [0.0, 0.0, 0.0]
    return out


def _box_of(points: np.ndarray) -> list[float]:
    pts = points[points[:, 2] > 0]
    if len(pts) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = pts[:, :2].min(0)
    x1, y1 = pts[:, :2].max(0)
    pad = max(1.0, 0.1 * max(x1 - x0, y1 - y0))
    return [
        round(float(x0 - pad), 2),
        round(float(y0 - pad), 2),
        round(float(x1 - x0 + 2 * pad), 2),
        round(float(y1 - y0 + 2 * pad), 2),
    ]


def _keypoint_scene(
    ctx: ExportContext, rng: np.random.Generator, index: int
) -> tuple[SceneRender, np.ndarray | None]:
    """1-5 people (COCO-like); sometimes (always in scene 0) a far group marked as one crowd region."""
    hw = ctx.preset.scene_hw
    n = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
    scene, _people = crowd_scene(rng, hw, ctx.backgrounds(), n, min_h=0.25, max_h=0.95)
    crowd_mask = None
    if (
        index == 0 or rng.random() < 0.2
    ):  # a distant group: too small to annotate one by one -> iscrowd region
        h, w = hw
        base_x, base_y = w * rng.uniform(0.15, 0.85), h * rng.uniform(0.38, 0.5)
        group = [
            PersonSpec(
                sample_appearance(rng), sample_pose(rng), base_x + dx, base_y + rng.uniform(-2, 2), h * 0.1
            )
            for dx in np.linspace(-0.08 * w, 0.08 * w, int(rng.integers(4, 7)))
        ]
        scene2 = render_scene(scene.image, group, rng)  # group drawn behind nobody: it is far away
        people_mask = scene.prim_map > 0
        crowd_mask = (scene2.prim_map > 0) & ~people_mask
        scene.image = np.where(people_mask[..., None], scene.image, scene2.image)
    scene.image = apply_camera(scene.image, make_camera(rng), rng)
    return scene, crowd_mask


def _coco_like(ctx: ExportContext, wholebody: bool) -> None:
    p = ctx.preset
    sizes = p.coco_wholebody if wholebody else p.coco
    ann_id = 1
    for split, n in zip(("train", "val"), sizes, strict=True):
        images, annotations, detections = [], [], []
        # COCO-like ids (< 600,000), unique, and disjoint between train and val
        lo, hi = (1, 500_000) if split == "train" else (500_000, 600_000)
        ids = ctx.rng("image-ids", split).choice(np.arange(lo, hi), size=n, replace=False)
        for k in range(n):
            rng = ctx.rng("scene", split, k)
            scene, crowd_mask = _keypoint_scene(ctx, rng, k)
            image_id = int(ids[k])
            fname = f"{image_id:012d}.jpg"
            save_image(ctx.root / f"{split}2017" / fname, scene.image)
            h, w = scene.image.shape[:2]
            images.append(
                {
                    "license": 1,
                    "file_name": fname,
                    "coco_url": "",
                    "height": h,
                    "width": w,
                    "date_captured": "2017-01-01 00:00:00",
                    "flickr_url": "",
                    "id": image_id,
                }
            )
            tile = scene.image.copy()
            for pi, person in enumerate(scene.people):
                mask = scene.body_mask(pi)
                area = int(mask.sum())
                bbox = mask_bbox(mask)
                if bbox is None:
                    continue
                kps = person.keypoints.copy()
                if area < MIN_KPT_AREA:
                    kps[:] = 0
                ann = {
                    "segmentation": mask_polygons(mask),
                    "num_keypoints": int((kps[:, 2] > 0).sum()),
                    "area": float(area),
                    "iscrowd": 0,
                    "keypoints": _kp_list(kps),
                    "image_id": image_id,
                    "bbox": bbox,
                    "category_id": 1,
                    "id": ann_id,
                }
                if wholebody:
                    small = area < MIN_KPT_AREA
                    parts = {
                        "foot": person.foot,
                        "face": person.face,
                        "lefthand": person.lefthand,
                        "righthand": person.righthand,
                    }
                    for part, pts in parts.items():
                        pts = np.zeros_like(pts) if small else pts
                        labelled = pts[:, 2] > 0
                        ann[f"{part}_kpts"] = (
                            _kp_list(pts, as_int=False)
                            if part != "foot"
                            else [
                                v
                                for x, y, vis in pts
                                for v in (
                                    (round(float(x), 2), round(float(y), 2), int(vis))
                                    if vis > 0
                                    else (0.0, 0.0, 0)
                                )
                            ]
                        )
                        ann[f"{part}_valid"] = bool(labelled.any())
                        if part != "foot":
                            ann[f"{part}_box"] = _box_of(pts) if labelled.any() else [0.0, 0.0, 0.0, 0.0]
                annotations.append(ann)
                detections.append(
                    {
                        "bbox": [round(v + float(rng.normal(0, 1.5)), 2) for v in bbox],
                        "category_id": 1,
                        "image_id": image_id,
                        "score": round(float(rng.uniform(0.5, 1)), 4),
                    }
                )
                ann_id += 1
                draw_box(tile, bbox, (255, 255, 0))
                tile = draw_keypoints(tile, kps, COCO_SKELETON)
                if wholebody:
                    for part in ("face", "lefthand", "righthand"):
                        tile = draw_keypoints(
                            tile, np.asarray(ann[f"{part}_kpts"]).reshape(-1, 3) * [1, 1, 2]
                        )
            if crowd_mask is not None and crowd_mask.any():
                crowd = {
                    "segmentation": mask_rle_uncompressed(crowd_mask),
                    "num_keypoints": 0,
                    "area": float(crowd_mask.sum()),
                    "iscrowd": 1,
                    "keypoints": [0] * 51,
                    "image_id": image_id,
                    "bbox": mask_bbox(crowd_mask),
                    "category_id": 1,
                    "id": ann_id,
                }
                if wholebody:
                    for part, size in (("foot", 6), ("face", 68), ("lefthand", 21), ("righthand", 21)):
                        crowd[f"{part}_kpts"] = [0.0] * (3 * size)
                        crowd[f"{part}_valid"] = False
                        if part != "foot":
                            crowd[f"{part}_box"] = [0.0, 0.0, 0.0, 0.0]
                annotations.append(crowd)
                ann_id += 1
                draw_box(tile, crowd["bbox"], (255, 0, 255))
            ctx.add_tile(tile, f"{split} {len(scene.people)} persons", limit=8)
            ctx.tick(1)
        ctx.counts[split] = {"images": len(images)}
        doc = {
            "info": COCO_INFO,
            "licenses": COCO_LICENSES,
            "categories": COCO_CATEGORIES,
            "images": images,
            "annotations": annotations,
        }
        name = f"coco_wholebody_{split}_v1.0.json" if wholebody else f"person_keypoints_{split}2017.json"
        write_json(ctx.root / "annotations" / name, doc)
        if split == "val" and not wholebody:
            write_json(
                ctx.root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json",
                detections,
            )


def export_coco(ctx: ExportContext) -> None:
    """annotations/person_keypoints_{train,val}2017.json + {train,val}2017/ + val person detections."""
    _coco_like(ctx, wholebody=False)


def export_coco_wholebody(ctx: ExportContext) -> None:
    """annotations/coco_wholebody_{train,val}_v1.0.json (133 keypoints: body, foot, face, hands)."""
    _coco_like(ctx, wholebody=True)


# ---------------------------------------------------------------------------------------------- LIP


def export_lip(ctx: ExportContext) -> None:
    """TrainVal_images/{train,val}_images/<id>.jpg + TrainVal_parsing_annotations/*_segmentations/<id>.png."""
    p = ctx.preset
    pool = ctx.backgrounds()
    used: set[str] = set()
    for split, n in zip(("train", "val"), p.lip, strict=True):
        ids = []
        for k in range(n):
            rng = ctx.rng("img", split, k)
            bh, bw = p.lip_hw
            hw = (int(bh * rng.uniform(0.8, 1.25)), int(bw * rng.uniform(0.8, 1.25)))
            partial = ("upper", "upper", None, None, None, None)[
                int(rng.integers(6))
            ]  # LIP has many half bodies
            img, scene = person_crop(
                sample_appearance(rng),
                rng,
                hw,
                pool,
                make_camera(rng),
                occluder_prob=0.2,
                partial=partial,
                scale=(0.75, 0.98),
            )
            lip = scene.lip_map()
            lip[scene.person_map() != len(scene.people)] = 0  # only the target person is labelled
            while True:
                ident = f"{int(rng.integers(1, 600000))}_{int(rng.integers(100000, 999999))}"
                if ident not in used:
                    used.add(ident)
                    break
            save_image(ctx.root / "TrainVal_images" / f"{split}_images" / f"{ident}.jpg", img)
            save_label_png(
                ctx.root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{ident}.png", lip
            )
            ids.append(ident)
            ctx.add_tile(np.concatenate([img, colourise(lip)], 1), f"{split} {ident}", limit=10)
            ctx.tick(1)
        write_lines(ctx.root / f"{split}_id.txt", ids)
        ctx.counts[split] = {"images": len(ids)}


# --------------------------------------------------------------------------------------------- CIHP


def export_cihp(ctx: ExportContext) -> None:
    """Training|Validation/{Images,Category_ids,Human_ids,Instance_ids}/ + train_id.txt / val_id.txt.

    Instance_ids value = class + 20 * (human - 1) (as in CIHP_PGN's Instance_part metadata), so at most 12
    people per image fit in 8 bits.
    """
    p = ctx.preset
    counter = 0
    for split, folder, n in (("train", "Training", p.cihp[0]), ("val", "Validation", p.cihp[1])):
        ids = []
        for k in range(n):
            rng = ctx.rng("scene", split, k)
            scene, _ = crowd_scene(
                rng,
                p.scene_hw,
                ctx.backgrounds(),
                int(rng.integers(2, 6)),
                min_h=0.35,
                max_h=0.95,
                allow_cut=False,
            )
            image = apply_camera(scene.image, make_camera(rng), rng)
            cat = scene.cihp_map()
            person = scene.person_map()
            human = np.where(cat > 0, person, 0).astype(np.int32)
            # humans are numbered 1..n in order of appearance among labelled pixels
            present = [v for v in range(1, len(scene.people) + 1) if (human == v).any()]
            remap = np.zeros(len(scene.people) + 1, np.int32)
            for new, old in enumerate(present, start=1):
                remap[old] = new
            human = remap[human]
            inst = np.where(cat > 0, cat.astype(np.int32) + 20 * (human - 1), 0)
            counter += 1
            ident = f"{counter:07d}"
            save_image(ctx.root / folder / "Images" / f"{ident}.jpg", image)
            save_label_png(ctx.root / folder / "Category_ids" / f"{ident}.png", cat)
            save_label_png(ctx.root / folder / "Human_ids" / f"{ident}.png", human.astype(np.uint8))
            save_label_png(ctx.root / folder / "Instance_ids" / f"{ident}.png", inst.astype(np.uint8))
            ids.append(ident)
            ctx.add_tile(
                np.concatenate([image, colourise(cat)], 1),
                f"{folder} {ident} {len(present)} persons",
                limit=6,
            )
            ctx.tick(1)
        write_lines(ctx.root / folder / f"{split}_id.txt", ids)
        ctx.counts[split] = {"images": len(ids)}


# --------------------------------------------------------------------------------------- CrowdHuman


def export_crowdhuman(ctx: ExportContext) -> None:
    """Images/<ID>.jpg + annotation_{train,val}.odgt (fbox/vbox/hbox, ignore persons, mask regions)."""
    p = ctx.preset
    h, w = p.scene_hw
    for split, n in zip(("train", "val"), p.crowdhuman, strict=True):
        lines = []
        n_persons = 0
        for k in range(n):
            rng = ctx.rng("scene", split, k)
            n_people = int(rng.integers(4, 15))
            scene, _ = crowd_scene(rng, p.scene_hw, ctx.backgrounds(), n_people, min_h=0.12, max_h=0.9)
            boxes = []
            mask_region = None
            if rng.random() < 0.5:  # a poster / reflection with people on it: an ignore region
                x0, y0 = int(w * rng.uniform(0.0, 0.7)), int(h * rng.uniform(0.05, 0.3))
                rw, rh = int(w * rng.uniform(0.12, 0.25)), int(h * rng.uniform(0.2, 0.35))
                poster = np.full((rh, rw, 3), rng.uniform(150, 240, 3), np.float32).astype(np.uint8)
                poster_people = [
                    PersonSpec(sample_appearance(rng), sample_pose(rng), rw * f, rh * 0.95, rh * 0.8)
                    for f in (0.3, 0.7)
                ]
                pscene = render_scene(poster, poster_people, rng)
                region = scene.image[y0 : y0 + rh, x0 : x0 + rw]
                occupied = scene.prim_map[y0 : y0 + rh, x0 : x0 + rw] > 0
                region[~occupied] = pscene.image[: region.shape[0], : region.shape[1]][~occupied]
                mask_region = [x0, y0, region.shape[1], region.shape[0]]
            image = apply_camera(scene.image, make_camera(rng), rng)
            tile = image.copy()
            owner = scene.person_map()
            for pi, person in enumerate(scene.people):
                vis = mask_bbox(scene.body_mask(pi))
                if vis is None:
                    continue
                hb = [round(v) for v in person.head_box]
                fbox = _union([round(v) for v in person.full_box], [int(v) for v in vis], hb)
                full_area = max(1.0, fbox[2] * fbox[3])
                occ = int(vis[2] * vis[3] < 0.75 * full_area)
                head_vis = int(
                    owner[
                        int(np.clip(hb[1] + hb[3] // 2, 0, h - 1)), int(np.clip(hb[0] + hb[2] // 2, 0, w - 1))
                    ]
                    == pi + 1
                )
                extra = {"box_id": len(boxes), "occ": occ}
                if vis[3] < 8 or vis[2] * vis[3] < 0.05 * full_area:
                    extra["ignore"] = 1  # barely visible: annotated but ignored
                n_persons += 1
                boxes.append(
                    {
                        "tag": "person",
                        "fbox": fbox,
                        "vbox": [int(v) for v in vis],
                        "hbox": hb,
                        "extra": extra,
                        "head_attr": {"ignore": 0, "occ": 1 - head_vis, "unsure": 0},
                    }
                )
                draw_box(tile, vis, (0, 255, 0))
                draw_box(tile, fbox, (255, 255, 0))
                draw_box(tile, hb, (255, 0, 0))
            if mask_region is not None:
                boxes.append(
                    {
                        "tag": "mask",
                        "fbox": mask_region,
                        "vbox": mask_region,
                        "hbox": mask_region,
                        "extra": {"ignore": 1},
                        "head_attr": {},
                    }
                )
                draw_box(tile, mask_region, (255, 0, 255))
            ident = f"{int(rng.integers(100000, 999999))},{int(rng.integers(0, 2**63)):016x}"
            save_image(ctx.root / "Images" / f"{ident}.jpg", image)
            lines.append(_json_line({"ID": ident, "gtboxes": boxes}))
            ctx.add_tile(tile, f"{split} {ident[:14]}", limit=6)
            ctx.tick(1)
        (ctx.root / f"annotation_{split}.odgt").write_text("".join(line + "\n" for line in lines))
        ctx.counts[split] = {"images": len(lines), "persons": n_persons}


def _union(*boxes: list[int]) -> list[int]:
    """The smallest [x, y, w, h] holding every box: the full-body box always encloses vbox and hbox."""
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return [x0, y0, x1 - x0, y1 - y0]


def _json_line(obj: dict) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


# ------------------------------------------------------------------------------------- Fashionpedia

_CAT_ID = {name: cid for cid, name, *_ in CATEGORIES}
_ATT_ID = {name: aid for aid, name, *_ in ATTRIBUTES}
_PATTERN_ATTR = {
    "plain": "plain (pattern)",
    "stripe": "stripe",
    "plaid": "check",
    "logo": "letters, numbers",
    "splice": "geometric",
    "pattern": "dot",
}


def _garment_attributes(key: str, a) -> list[str]:
    """Fashionpedia attribute names for one garment of appearance ``a`` (only for attribute categories)."""
    if key == "upper":
        names = {
            "tshirt": ["classic (t-shirt)", "regular (fit)", "hip (length)", "no opening"],
            "shirt": ["regular (fit)", "hip (length)", "single breasted"],
            "sweater": ["regular (fit)", "hip (length)", "no opening"],
            "vest": ["tank (top)", "tight (fit)", "above-the-hip (length)", "no opening"],
            "dress": ["shift (dress)", "straight", "above-the-knee (length)", "no opening"],
            "jumpsuit": ["regular (fit)", "maxi (length)", "zip-up"],
        }[a.upper]
        names = [*names, _PATTERN_ATTR[a.upper_pattern]]
        if a.vneck:
            names.append("v-neck")
        return names
    if key == "lower":
        base = {
            "trousers": ["straight", "maxi (length)", "normal waist", "fly (opening)"],
            "shorts": ["short (shorts)", "regular (fit)", "mini (length)", "normal waist"],
            "skirt": ["a-line", "mini (length)", "normal waist"],
            "longskirt": ["a-line", "maxi (length)", "normal waist"],
        }[a.lower]
        if a.lower == "trousers" and a.lower_colour == "blue":
            base = ["jeans", *base]
        return [*base, _PATTERN_ATTR[a.lower_pattern]]
    if key == "coat":
        return [
            "trench (coat)",
            "single breasted",
            "regular (fit)",
            "above-the-knee (length)",
            "plain (pattern)",
        ]
    if key.startswith("sleeve"):
        long = a.coat or a.upper in ("shirt", "sweater", "jumpsuit")
        return ["set-in sleeve", "wrist-length" if long else "short (length)"]
    return []


def export_fashionpedia(ctx: ExportContext) -> None:
    """instances_attributes_{train,val}2020.json (0-based categories, raw attribute ids), train/ + test/."""
    p = ctx.preset
    h, w = p.fashion_hw
    ann_id = 1
    image_id = 0
    for split, folder, n in (("train", "train", p.fashionpedia[0]), ("val", "test", p.fashionpedia[1])):
        images, annotations = [], []
        for k in range(n):
            rng = ctx.rng("photo", split, k)
            n_people = 1 if rng.random() < 0.75 else 2
            people = []
            for j in range(n_people):
                fx = w * (0.5 if n_people == 1 else (0.3 + 0.4 * j)) + w * rng.uniform(-0.08, 0.08)
                people.append(
                    PersonSpec(
                        sample_appearance(rng),
                        sample_pose(rng, view="front" if rng.random() < 0.7 else None, lively=0.15),
                        fx,
                        h * rng.uniform(0.96, 1.1),
                        h * rng.uniform(0.85, 1.05),
                    )
                )
            bg = background_crop(ctx.backgrounds(), rng, h, w)
            scene = render_scene(bg, people, rng)
            image = apply_camera(scene.image, make_camera(rng), rng)
            image_id += 1
            fname = f"{int(rng.integers(0, 2**63)):016x}{image_id:016x}.jpg"
            save_image(ctx.root / folder / fname, image)
            images.append({"id": image_id, "width": w, "height": h, "file_name": fname})
            tile = image.copy()
            for pi, person in enumerate(scene.people):
                a = people[pi].appearance
                keys = dict(person.garments)
                for side in ("l", "r"):
                    keys[f"sleeve_{side}"] = "sleeve"
                for key, cat_name in sorted(keys.items()):
                    if key.startswith("sleeve"):
                        side = key[-1]
                        ids = [
                            i
                            for i, g in enumerate(scene.prim_garment)
                            if g in ("upper", "coat")
                            and scene.prim_person[i] == pi
                            and scene.prim_chain[i] == f"arm_{side}"
                        ]
                        mask = np.isin(scene.prim_map, ids)
                    else:
                        mask = scene.garment_mask(pi, key)
                    area = int(mask.sum())
                    if area < 6:
                        continue
                    cat_id = _CAT_ID[cat_name]
                    bbox = mask_bbox(mask)
                    annotations.append(
                        {
                            "id": ann_id,
                            "image_id": image_id,
                            "category_id": cat_id,
                            "attribute_ids": sorted(_ATT_ID[nm] for nm in _garment_attributes(key, a)),
                            "segmentation": mask_polygons(mask),
                            "bbox": bbox,
                            "area": float(area),
                            "iscrowd": 0,
                        }
                    )
                    ann_id += 1
                    draw_box(
                        tile, bbox, tuple(int(c) for c in np.random.default_rng(cat_id).integers(64, 255, 3))
                    )
            n_here = sum(1 for ann in annotations if ann["image_id"] == image_id)
            ctx.add_tile(tile, f"{folder} {n_here} instances", limit=8)
            ctx.tick(1)
        doc = {
            "info": {
                "year": 2020,
                "version": "1.0",
                "description": "saip-bench synthetic world (Fashionpedia format)",
                "contributor": "saip-bench",
                "url": "",
                "date_created": "2020-01-01 00:00:00",
            },
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": c, "name": nm, "supercategory": s, "level": lv, "taxonomy_id": t}
                for c, nm, s, lv, t in CATEGORIES
            ],
            "attributes": [
                {"id": c, "name": nm, "supercategory": s, "level": lv, "taxonomy_id": t}
                for c, nm, s, lv, t in ATTRIBUTES
            ],
        }
        write_json(ctx.root / f"instances_attributes_{split}2020.json", doc)
        ctx.counts[split] = {"images": len(images), "annotations": len(annotations)}
