"""Closed vocabularies of the synthetic world: class lists, keypoint names, attribute names, colours.

Names are those of the native files (docs/formats.md), so labels written by the exporters read like the real
ones. Everything the renderer draws maps to these lists through tables here, never ad hoc.
"""

from __future__ import annotations

from saip_bench.data import vocab as _official

COCO_KEYPOINTS = list(_official.COCO_KEYPOINTS)
COCO_SKELETON = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]
FOOT_KEYPOINTS = [
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
]
HAND_KEYPOINTS = ["hand_root"] + [
    f"{finger}{i}"
    for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    for i in range(1, 5)
]

LIP_CLASSES = list(_official.LIP_CLASSES)
CIHP_CLASSES = list(_official.CIHP_CLASSES)

# Semantic part kinds the renderer draws; each maps to a LIP id and a CIHP id (they differ at index 10:
# LIP has Jumpsuits, CIHP Torso-skin; LIP leaves torso skin unlabelled, CIHP lumps jumpsuits into clothes).
PART_KINDS: dict[str, tuple[int, int]] = {
    "none": (0, 0),  # bags and held objects: not a LIP/CIHP class
    "hat": (1, 1),
    "hair": (2, 2),
    "glove": (3, 3),
    "sunglasses": (4, 4),
    "upper": (5, 5),
    "dress": (6, 6),
    "coat": (7, 7),
    "socks": (8, 8),
    "pants": (9, 9),
    "jumpsuit_upper": (10, 5),
    "jumpsuit_lower": (10, 9),
    "torso_skin": (0, 10),
    "scarf": (11, 11),
    "skirt": (12, 12),
    "face": (13, 13),
    "arm_l": (14, 14),
    "arm_r": (15, 15),
    "leg_l": (16, 16),
    "leg_r": (17, 17),
    "shoe_l": (18, 18),
    "shoe_r": (19, 19),
}

PA100K_ATTRIBUTES = list(_official.PA100K_ATTRIBUTES)

PETA_ATTRIBUTES = [
    "personalLess30",
    "personalLess45",
    "personalLess60",
    "personalLarger60",
    "carryingBackpack",
    "carryingOther",
    "lowerBodyCasual",
    "upperBodyCasual",
    "lowerBodyFormal",
    "upperBodyFormal",
    "accessoryHat",
    "upperBodyJacket",
    "lowerBodyJeans",
    "footwearLeatherShoes",
    "upperBodyLogo",
    "hairLong",
    "personalMale",
    "carryingMessengerBag",
    "accessoryMuffler",
    "accessoryNothing",
    "carryingNothing",
    "upperBodyPlaid",
    "carryingPlasticBags",
    "footwearSandals",
    "footwearShoes",
    "lowerBodyShorts",
    "upperBodyShortSleeve",
    "lowerBodyShortSkirt",
    "footwearSneaker",
    "upperBodyThinStripes",
    "accessorySunglasses",
    "lowerBodyTrousers",
    "upperBodyTshirt",
    "upperBodyOther",
    "upperBodyVNeck",
    "upperBodyBlack",
    "upperBodyBlue",
    "upperBodyBrown",
    "upperBodyGreen",
    "upperBodyGrey",
    "upperBodyOrange",
    "upperBodyPink",
    "upperBodyPurple",
    "upperBodyRed",
    "upperBodyWhite",
    "upperBodyYellow",
    "lowerBodyBlack",
    "lowerBodyBlue",
    "lowerBodyBrown",
    "lowerBodyGreen",
    "lowerBodyGrey",
    "lowerBodyOrange",
    "lowerBodyPink",
    "lowerBodyPurple",
    "lowerBodyRed",
    "lowerBodyWhite",
    "lowerBodyYellow",
    "hairBlack",
    "hairBlue",
    "hairBrown",
    "hairGreen",
    "hairGrey",
    "hairOrange",
    "hairPink",
    "hairPurple",
    "hairRed",
    "hairWhite",
    "hairYellow",
    "footwearBlack",
    "footwearBlue",
    "footwearBrown",
    "footwearGreen",
    "footwearGrey",
    "footwearOrange",
    "footwearPink",
    "footwearPurple",
    "footwearRed",
    "footwearWhite",
    "footwearYellow",
    "accessoryHeadphone",
    "personalLess15",
    "carryingBabyBuggy",
    "hairBald",
    "footwearBoots",
    "lowerBodyCapri",
    "carryingShoppingTro",
    "carryingUmbrella",
    "personalFemale",
    "carryingFolder",
    "accessoryHairBand",
    "lowerBodyHotPants",
    "accessoryKerchief",
    "lowerBodyLongSkirt",
    "upperBodyLongSleeve",
    "lowerBodyPlaid",
    "lowerBodyThinStripes",
    "carryingLuggageCase",
    "upperBodyNoSleeve",
    "hairShort",
    "footwearStocking",
    "upperBodySuit",
    "carryingSuitcase",
    "lowerBodySuits",
    "upperBodySweater",
    "upperBodyThickStripes",
]
PETA_EVAL_COUNT = 35  # the first 35 columns are the evaluated ones (selected_attribute = 5..39, 1-based)

# PETA's 11 colour names; the RGB anchors are what the renderer paints (with small per-identity jitter
# that never crosses into a neighbouring name, so captions and colour attributes stay truthful).
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (232, 232, 228),
    "grey": (128, 128, 132),
    "red": (196, 34, 40),
    "blue": (40, 70, 190),
    "green": (46, 140, 60),
    "yellow": (226, 200, 40),
    "orange": (236, 124, 30),
    "pink": (236, 140, 180),
    "purple": (118, 50, 150),
    "brown": (110, 70, 40),
}
HAIR_COLOURS = ["black", "brown", "grey", "yellow", "white", "red"]
SKIN_TONES = [(248, 214, 186), (236, 188, 150), (210, 160, 120), (172, 120, 84), (128, 86, 58), (92, 62, 44)]
