"""World sizes as data: one row per preset. Counts are images unless named ``*_ids`` (identities).

``tiny`` feeds the test suite (seconds), ``default`` the main job (the whole benchmark on 2 CPU cores),
``large`` GPU users, ``gpu_check`` the one-command GPU check (``large``'s image sizes, so decoding costs
what it will on real data, with counts a 16-core machine writes in about half a minute). Change sizes
here, nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from saip_bench.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    crop_hw: tuple[int, int]  # ReID / PEDES / PAR / pretrain person crops (H, W)
    scene_hw: tuple[int, int]  # COCO / CrowdHuman / CIHP scenes (H, W)
    fashion_hw: tuple[int, int]  # Fashionpedia portrait photos
    lip_hw: tuple[int, int]  # LIP single-person images (base size, jittered per image)
    background_hw: tuple[int, int]  # pretrain backgrounds (SAIP multi-person canvas)
    market_train_ids: int
    market_test_ids: int
    market_train_per_id: int
    market_gallery_per_id: int
    market_junk: int
    market_distractors: int
    msmt_train_ids: int
    msmt_test_ids: int
    msmt_train_per_id: int
    msmt_gallery_per_id: int
    cuhk_ids: tuple[int, int, int]  # train, val, test identities
    icfg_ids: tuple[int, int]  # train, test identities
    pedes_per_id: int
    pa100k: tuple[int, int, int]  # train, val, test images
    peta_images: int
    peta_ids: int
    coco: tuple[int, int]  # train, val scenes
    coco_wholebody: tuple[int, int]
    lip: tuple[int, int]
    cihp: tuple[int, int]
    crowdhuman: tuple[int, int]
    fashionpedia: tuple[int, int]
    pretrain_ids: int
    pretrain_per_id: int
    pretrain_backgrounds: int

    def to_json(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        crop_hw=(128, 64),
        scene_hw=(192, 256),
        fashion_hw=(256, 192),
        lip_hw=(128, 96),
        background_hw=(192, 192),
        market_train_ids=8,
        market_test_ids=8,
        market_train_per_id=4,
        market_gallery_per_id=3,
        market_junk=3,
        market_distractors=3,
        msmt_train_ids=8,
        msmt_test_ids=8,
        msmt_train_per_id=4,
        msmt_gallery_per_id=3,
        cuhk_ids=(8, 4, 4),
        icfg_ids=(8, 4),
        pedes_per_id=2,
        pa100k=(40, 20, 20),
        peta_images=80,
        peta_ids=40,
        coco=(8, 6),
        coco_wholebody=(8, 6),
        lip=(16, 8),
        cihp=(8, 6),
        crowdhuman=(8, 6),
        fashionpedia=(8, 6),
        pretrain_ids=12,
        pretrain_per_id=3,
        pretrain_backgrounds=6,
    ),
    "default": Preset(
        name="default",
        crop_hw=(128, 64),
        scene_hw=(240, 320),
        fashion_hw=(320, 240),
        lip_hw=(160, 112),
        background_hw=(256, 256),
        market_train_ids=48,
        market_test_ids=48,
        market_train_per_id=6,
        market_gallery_per_id=4,
        market_junk=20,
        market_distractors=30,
        msmt_train_ids=48,
        msmt_test_ids=48,
        msmt_train_per_id=5,
        msmt_gallery_per_id=4,
        cuhk_ids=(64, 20, 40),
        icfg_ids=(64, 40),
        pedes_per_id=2,
        pa100k=(240, 60, 100),
        peta_images=400,
        peta_ids=200,
        coco=(120, 60),
        coco_wholebody=(120, 60),
        lip=(240, 80),
        cihp=(100, 50),
        crowdhuman=(100, 50),
        fashionpedia=(100, 50),
        pretrain_ids=160,
        pretrain_per_id=4,
        pretrain_backgrounds=40,
    ),
    "large": Preset(
        name="large",
        crop_hw=(256, 128),
        scene_hw=(480, 640),
        fashion_hw=(640, 480),
        lip_hw=(320, 224),
        background_hw=(512, 512),
        market_train_ids=400,
        market_test_ids=400,
        market_train_per_id=12,
        market_gallery_per_id=8,
        market_junk=300,
        market_distractors=500,
        msmt_train_ids=500,
        msmt_test_ids=600,
        msmt_train_per_id=10,
        msmt_gallery_per_id=10,
        cuhk_ids=(1000, 200, 200),
        icfg_ids=(800, 300),
        pedes_per_id=3,
        pa100k=(8000, 1000, 1000),
        peta_images=4000,
        peta_ids=1800,
        coco=(4000, 500),
        coco_wholebody=(4000, 500),
        lip=(6000, 1000),
        cihp=(3000, 500),
        crowdhuman=(2000, 500),
        fashionpedia=(2000, 400),
        pretrain_ids=6000,
        pretrain_per_id=6,
        pretrain_backgrounds=1000,
    ),
    "gpu_check": Preset(
        name="gpu_check",
        crop_hw=(256, 128),
        scene_hw=(480, 640),
        fashion_hw=(640, 480),
        lip_hw=(320, 224),
        background_hw=(512, 512),
        market_train_ids=64,
        market_test_ids=64,
        market_train_per_id=8,
        market_gallery_per_id=4,
        market_junk=20,
        market_distractors=40,
        msmt_train_ids=64,
        msmt_test_ids=64,
        msmt_train_per_id=6,
        msmt_gallery_per_id=4,
        cuhk_ids=(160, 20, 60),
        icfg_ids=(160, 60),
        pedes_per_id=2,
        pa100k=(320, 60, 200),
        peta_images=600,
        peta_ids=250,
        coco=(160, 60),
        coco_wholebody=(160, 60),
        lip=(160, 100),
        cihp=(80, 50),
        crowdhuman=(60, 40),
        fashionpedia=(60, 40),
        pretrain_ids=256,
        pretrain_per_id=4,
        pretrain_backgrounds=64,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown synthetic-world preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
