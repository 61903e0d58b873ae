"""Labels agree with pixels: keypoints, part maps, boxes, attributes and captions come from one scene."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from saip_bench.data.synth.appearance import Appearance, caption_colour_words, sample_appearance
from saip_bench.data.synth.render import sample_pose
from saip_bench.data.synth.scene import PersonSpec, make_background, render_scene
from saip_bench.data.synth.vocab import COLOURS, PETA_EVAL_COUNT

COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")


def _scenes(n: int, people: int = 4):
    for seed in range(n):
        rng = np.random.default_rng(seed)
        bg = make_background(rng, 160, 200)
        specs = [
            PersonSpec(
                sample_appearance(rng),
                sample_pose(rng),
                float(rng.uniform(10, 190)),
                float(rng.uniform(90, 175)),
                float(rng.uniform(50, 150)),
            )
            for _ in range(people)
        ]
        yield render_scene(bg, specs, rng), specs


def test_visible_keypoints_lie_on_their_own_person() -> None:
    checked = 0
    for scene, _ in _scenes(12):
        owner = scene.person_map()
        for pi, person in enumerate(scene.people):
            for x, y, v in np.concatenate([person.keypoints, person.foot]):
                if v == 2:
                    assert owner[int(y), int(x)] == pi + 1
                    checked += 1
    assert checked > 100


def test_occluded_keypoints_are_marked_invisible() -> None:
    occluded = 0
    for scene, _ in _scenes(12, people=6):
        owner = scene.person_map()
        for pi, person in enumerate(scene.people):
            for x, y, v in person.keypoints:
                if v > 0 and owner[int(y), int(x)] not in (pi + 1,):
                    assert v == 1  # drawn over by someone/something else -> labelled but not visible
                    occluded += 1
    assert occluded > 0


def test_part_maps_cover_exactly_the_drawn_body() -> None:
    for scene, _ in _scenes(6):
        drawn = scene.prim_map > 0
        lip, cihp = scene.lip_map(), scene.cihp_map()
        carried = drawn & (cihp == 0)  # bags and held objects carry no part class in LIP/CIHP
        torso_skin = cihp == 10  # CIHP-only class; LIP leaves it unlabelled
        assert ((lip > 0) == (drawn & ~carried & ~torso_skin)).all()
        assert ((cihp > 0) == (drawn & ~carried)).all()
        assert (lip <= 19).all() and (cihp <= 19).all()


def test_rendered_classes_match_the_appearance() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        a = sample_appearance(rng)
        pose = sample_pose(rng, view="front", lively=0.0)
        scene = render_scene(make_background(rng, 260, 130), [PersonSpec(a, pose, 65.0, 255.0, 240.0)], rng)
        present = set(np.unique(scene.lip_map()).tolist())
        assert (1 in present) == a.hat
        assert (4 in present) == a.glasses
        assert (7 in present) == a.coat
        assert (6 in present) == (a.upper == "dress")
        assert (10 in present) == (a.upper == "jumpsuit")
        assert (12 in present) == (a.lower in ("skirt", "longskirt"))
        assert (11 in present) == a.scarf
        assert (9 in present) == (a.lower in ("trousers", "shorts"))
        assert 13 in present and {18, 19} <= present
        assert ({14, 15} <= present) or (a.gloves and 3 in present)


def test_boxes_enclose_masks(synth_world: Path) -> None:
    from pycocotools.coco import COCO

    for name, path in (
        ("coco", "annotations/person_keypoints_train2017.json"),
        ("coco_wholebody", "annotations/coco_wholebody_val_v1.0.json"),
        ("fashionpedia", "instances_attributes_train2020.json"),
    ):
        coco = COCO(str(synth_world / name / path))
        for ann in coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(coco.annToMask(ann))
            assert xs.size > 0
            assert x <= xs.min() and xs.max() < x + w + 1 and y <= ys.min() and ys.max() < y + h + 1
            if not ann["iscrowd"]:
                for poly in ann["segmentation"]:
                    assert all(x <= px <= x + w for px in poly[0::2]) and all(
                        y <= py <= y + h for py in poly[1::2]
                    )


def _appearance(data: dict) -> Appearance:
    return Appearance(**{**data, "skin": tuple(data["skin"])})


@pytest.mark.parametrize("name,file", [("cuhk_pedes", "reid_raw.json"), ("icfg_pedes", "ICFG-PEDES.json")])
def test_caption_colour_words_match_the_person(synth_world: Path, name: str, file: str) -> None:
    entries = json.loads((synth_world / name / file).read_text())
    side = json.loads((synth_world / ".world" / f"{name}.json").read_text())
    words_seen = 0
    for e in entries:
        a = _appearance(side["identities"][side["images"][e["file_path"]]])
        allowed = caption_colour_words(a)
        for caption in e["captions"]:
            words = COLOUR_WORD.findall(caption.lower())
            assert set(words) <= allowed, (caption, allowed)
            assert a.upper_colour in words  # the main garment colour is always named
            words_seen += len(words)
    assert words_seen > len(entries)
    styles = {e["captions"][0].split()[0] for e in entries}
    assert len(styles) > 1  # wording varies


def test_attributes_are_learnable_not_constant(synth_world: Path) -> None:
    mat = scipy.io.loadmat(synth_world / "pa100k" / "annotation.mat")
    for split in ("train", "val", "test"):
        labels = mat[f"{split}_label"].astype(float)
        # every column has both values, so a constant predictor scores exactly mA = 50%
        assert (labels.min(0) == 0).all() and (labels.max(0) == 1).all(), split
        assert 0.15 < labels.mean() < 0.5
    data = scipy.io.loadmat(synth_world / "peta" / "PETA.mat")["peta"][0][0][0]
    evaluated = data[:, 4 : 4 + PETA_EVAL_COUNT]
    assert (evaluated.min(0) == 0).all() and (evaluated.max(0) == 1).all()


def test_pa100k_labels_follow_the_pictured_appearance(synth_world: Path) -> None:
    mat = scipy.io.loadmat(synth_world / "pa100k" / "annotation.mat")
    side = json.loads((synth_world / ".world" / "pa100k.json").read_text())
    names = [str(a[0][0]) for a in mat["attributes"]]
    for split in ("train", "test"):
        for name_cell, row in zip(mat[f"{split}_images_name"], mat[f"{split}_label"], strict=True):
            info = side["images"][str(name_cell[0][0])]
            a = _appearance(info["appearance"])
            labels = dict(zip(names, row.tolist(), strict=True))
            assert labels["Hat"] == a.hat and labels["Backpack"] == (a.bag == "backpack")
            assert labels[info["view"].capitalize()] == 1
            assert labels["Female"] == a.female
