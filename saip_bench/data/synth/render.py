"""The procedural person renderer: articulated 3-D stick skeleton -> shaded 2-D primitives.

Every primitive is drawn at once into the RGB image and into an integer *primitive map* (one id per
primitive). A table maps primitive ids to person, LIP/CIHP class, garment and body chain, so every label
(part maps, instance maps, garment masks, boxes, keypoint visibility) is read from the same pixels the
image shows. Painter's order: chains (arm, leg, torso, head, ...) sorted far-to-near by their depth after
the body's yaw rotation, then a fixed layer order within a chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from saip_bench.data.synth.appearance import Appearance
from saip_bench.data.synth.vocab import COLOURS, PART_KINDS

_SHIFT = 4
_SCALE = 1 << _SHIFT
LIP_OF_KIND = {k: v[0] for k, v in PART_KINDS.items()}
CIHP_OF_KIND = {k: v[1] for k, v in PART_KINDS.items()}


@dataclass
class Pose:
    """Per-image pose of one person."""

    yaw: float  # degrees, 0 = facing the camera
    phase: float  # walking phase (radians)
    stride: float  # leg swing amplitude (degrees)
    arm_spread: tuple[float, float]  # abduction of left/right arm (degrees)
    raise_arm: int  # -1 none, 0 left, 1 right
    raise_angle: float
    lean: float  # body lean in degrees (image plane)


@dataclass
class Prim:
    shape: str  # poly | capsule | ellipse
    geom: tuple
    colour: tuple[int, int, int]
    kind: str  # key of PART_KINDS
    chain: str
    garment: str | None = None  # key of a garment instance (for Fashionpedia masks), e.g. "upper"
    pattern: str | None = None


@dataclass
class PersonDraw:
    """What ``build_person`` returns: primitives plus keypoints with self-occlusion flags."""

    prims: list[tuple[float, int, Prim]]  # (chain depth, layer, prim)
    body: np.ndarray  # (17, 2) image coordinates
    body_front: np.ndarray  # (17,) bool: not self-occluded by geometry (e.g. far ear)
    body_chains: list[tuple[str, ...]]
    foot: np.ndarray  # (6, 2)
    face: np.ndarray  # (68, 2)
    face_front: np.ndarray  # (68,) bool
    hands: np.ndarray  # (2, 21, 2) left, right
    hand_len: float
    head_box: tuple[float, float, float, float]  # x, y, w, h (head incl. hair)
    garments: dict[str, str] = field(default_factory=dict)  # garment key -> Fashionpedia category name


def sample_pose(rng: np.random.Generator, view: str | None = None, lively: float = 0.3) -> Pose:
    """A walking/standing pose; ``view`` forces front/back/side, ``lively`` raises arms more often."""
    if view is None:
        view = ("front", "back", "side")[int(rng.integers(3))]
    base = {"front": 0.0, "back": 180.0, "side": 90.0 * (1 if rng.random() < 0.5 else -1)}[view]
    yaw = base + float(rng.uniform(-25, 25))
    raise_arm = int(rng.integers(2)) if rng.random() < lively else -1
    return Pose(
        yaw=yaw,
        phase=float(rng.uniform(0, 2 * np.pi)),
        stride=float(rng.uniform(0, 28)),
        arm_spread=(float(rng.uniform(4, 18)), float(rng.uniform(4, 18))),
        raise_arm=raise_arm,
        raise_angle=float(rng.uniform(60, 160)),
        lean=float(rng.uniform(-4, 4)),
    )


def _shade(colour: tuple[int, int, int], tone: float, amount: float = 0.1) -> tuple[int, int, int]:
    f = 1.0 + amount * tone
    return tuple(min(255, max(0, int(c * f))) for c in colour)


def _rot(v: np.ndarray, axis: str, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    x, y, z = v
    if axis == "x":  # positive = forward swing (toward -z)
        return np.array([x, y * c + z * s, -y * s + z * c])
    return np.array([x * c + y * s, -x * s + y * c, z])  # about z: sideways


class _Projector:
    def __init__(self, yaw: float, lean: float, foot_x: float, foot_y: float, height: float) -> None:
        self.c, self.s = np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))
        self.lc, self.ls = np.cos(np.deg2rad(lean)), np.sin(np.deg2rad(lean))
        self.fx, self.fy, self.h = foot_x, foot_y, height

    def depth(self, p: np.ndarray) -> float:
        return float(-p[0] * self.s + p[2] * self.c)

    def many(self, pts: np.ndarray) -> np.ndarray:
        """Project an (N, 3) array at once."""
        x = pts[:, 0] * self.c + pts[:, 2] * self.s
        y = pts[:, 1]
        x, y = x * self.lc + y * self.ls, -x * self.ls + y * self.lc
        return np.stack([self.fx + x * self.h, self.fy - y * self.h], axis=1)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        x = p[0] * self.c + p[2] * self.s
        y = p[1]
        x, y = x * self.lc + y * self.ls, -x * self.ls + y * self.lc
        return np.array([self.fx + x * self.h, self.fy - y * self.h])


def build_person(a: Appearance, pose: Pose, foot_x: float, foot_y: float, height: float) -> PersonDraw:
    """Lay out one person's primitives and keypoints (no drawing yet)."""
    h = height * a.height / 1.05
    w = a.width
    P = _Projector(pose.yaw, pose.lean, foot_x, foot_y, h)
    front = P.c  # >0 facing camera
    prims: list[tuple[float, int, Prim]] = []
    skin = _shade(a.skin, a.tone, 0.05)

    def col(name: str, amount: float = 0.12) -> tuple[int, int, int]:
        return _shade(COLOURS[name], a.tone, amount)

    def add(depth: float, layer: int, prim: Prim) -> None:
        prims.append((depth, layer, prim))

    # --- skeleton (body frame: x = person's left, y up, z behind the person; units of body height)
    neck = np.array([0.0, 0.82, 0.0])
    head_c = np.array([0.0, 0.915, 0.0])
    shoulder = {s: np.array([sg * 0.125 * w, 0.80, 0.0]) for s, sg in (("l", 1), ("r", -1))}
    hip = {s: np.array([sg * 0.08 * w, 0.50, 0.0]) for s, sg in (("l", 1), ("r", -1))}
    swing = np.sin(pose.phase) * pose.stride
    elbow, wrist, knee, ankle, toe, heel = {}, {}, {}, {}, {}, {}
    for side, sg, idx in (("l", 1, 0), ("r", -1, 1)):
        arm_swing = -sg * swing * 0.8
        spread = pose.arm_spread[idx]
        if pose.raise_arm == idx:
            arm_swing, spread = pose.raise_angle * 0.35, pose.raise_angle
        upper_dir = _rot(_rot(np.array([0.0, -1.0, 0.0]), "z", -sg * spread), "x", arm_swing)
        elbow[side] = shoulder[side] + 0.16 * upper_dir
        bend = 25.0 + (40.0 if a.hold_front else 0.0) + (20.0 if pose.raise_arm == idx else 0.0)
        fore_dir = _rot(_rot(np.array([0.0, -1.0, 0.0]), "z", -sg * spread * 0.8), "x", arm_swing + bend)
        if a.hold_front and pose.raise_arm != idx:
            fore_dir = fore_dir + np.array([-sg * 0.5, 0.0, 0.0])
            fore_dir /= np.linalg.norm(fore_dir)
        wrist[side] = elbow[side] + 0.14 * fore_dir
        leg_swing = sg * swing
        thigh_dir = _rot(np.array([0.0, -1.0, 0.0]), "x", leg_swing)
        knee[side] = hip[side] + 0.245 * thigh_dir
        shin_dir = _rot(np.array([0.0, -1.0, 0.0]), "x", leg_swing - max(0.0, -leg_swing) * 1.2 - 4)
        ankle[side] = knee[side] + 0.235 * shin_dir
        toe[side] = ankle[side] + np.array([0.0, -0.025, -0.065])
        heel[side] = ankle[side] + np.array([0.0, -0.03, 0.02])

    head_r = 0.062  # vertical radius
    head_rx = 0.05
    hc2 = P(head_c)

    # facial landmarks on the head ellipsoid
    def head_pt(x: float, y: float, z: float) -> np.ndarray:
        return head_c + np.array([x * head_rx, y * head_r, z * head_rx])

    nose3 = head_pt(0, -0.1, -1.08)
    eyes3 = {"l": head_pt(0.38, 0.12, -0.9), "r": head_pt(-0.38, 0.12, -0.9)}
    ears3 = {"l": head_pt(1.0, 0.05, 0.05), "r": head_pt(-1.0, 0.05, 0.05)}
    pts3 = [
        nose3,
        eyes3["l"],
        eyes3["r"],
        ears3["l"],
        ears3["r"],
        shoulder["l"],
        shoulder["r"],
        elbow["l"],
        elbow["r"],
        wrist["l"],
        wrist["r"],
        hip["l"],
        hip["r"],
        knee["l"],
        knee["r"],
        ankle["l"],
        ankle["r"],
    ]
    body = np.array([P(p) for p in pts3])
    body_front = np.array(
        [P.depth(p - head_c) < 0.3 * head_rx if i < 5 else True for i, p in enumerate(pts3)]
    )
    face_chains = ("head_face", "head_glasses")
    body_chains: list[tuple[str, ...]] = [
        face_chains,
        face_chains,
        face_chains,
        ("head_face", "head_hair", "head_hat"),
        ("head_face", "head_hair", "head_hat"),
    ]
    for side in ("l", "r"):
        body_chains.append(("torso", f"arm_{side}"))
    body_chains += [(f"arm_{s}",) for s in ("l", "r")] + [(f"arm_{s}",) for s in ("l", "r")]
    body_chains += [("torso", "lower", f"leg_{s}") for s in ("l", "r")]
    body_chains += [("lower", f"leg_{s}") for s in ("l", "r")] + [("lower", f"leg_{s}") for s in ("l", "r")]

    # --- torso extents (a box of half-depth 0.06 rotated by yaw, projected)
    def _lv(x: float, y: float) -> np.ndarray:
        xx, yy = x * P.lc + y * P.ls, -x * P.ls + y * P.lc
        return np.array([P.fx + xx * h, P.fy - yy * h])

    def level(
        y: float, half_w: float, half_d: float = 0.06, dz: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Projected left/right extent of the torso box at height ``y``."""
        xs = [sx * half_w * P.c + (sz * half_d + dz) * P.s for sx in (-1, 1) for sz in (-1, 1)]
        return _lv(min(xs), y), _lv(max(xs), y)

    def torso_poly(top: float, bottom: float, wt: float, wb: float, flare: float = 0.0) -> np.ndarray:
        tl, tr = level(top, wt * w)
        ml, mr = level((top + bottom) / 2, ((wt + wb) / 2 - 0.012) * w)
        bl, br = level(bottom, (wb + flare) * w)
        return np.array([tl, tr, mr, br, bl, ml])

    garments: dict[str, str] = {}
    # --- legs (chain depth: behind the torso)
    lower_long = a.lower == "trousers" or a.upper == "jumpsuit"
    for side in ("l", "r"):
        chain = f"leg_{side}"
        d = P.depth(hip[side]) + P.depth(knee[side]) * 0.3 + 0.3
        leg_kind = f"leg_{side}"
        k2, a2, h2 = P(knee[side]), P(ankle[side]), P(hip[side])
        add(d, 0, Prim("capsule", (h2, k2, 0.052 * w * h, 0.04 * w * h), skin, leg_kind, chain))
        add(d, 0, Prim("capsule", (k2, a2, 0.04 * w * h, 0.028 * w * h), skin, leg_kind, chain))
        if a.socks:
            s_top = ankle[side] + 0.3 * (knee[side] - ankle[side])
            add(
                d,
                1,
                Prim(
                    "capsule",
                    (P(s_top), a2, 0.033 * w * h, 0.03 * w * h),
                    col("white", 0.05),
                    "socks",
                    chain,
                    garment=f"sock_{side}",
                ),
            )
            garments[f"sock_{side}"] = "sock"
        pants_kind = "jumpsuit_lower" if a.upper == "jumpsuit" else "pants"
        pants_col = col(a.upper_colour if a.upper == "jumpsuit" else a.lower_colour)
        pat = a.lower_pattern if a.lower_pattern != "plain" else None
        g = "upper" if a.upper == "jumpsuit" else "lower"
        if lower_long:
            add(
                d,
                2,
                Prim("capsule", (h2, k2, 0.062 * w * h, 0.05 * w * h), pants_col, pants_kind, chain, g, pat),
            )
            end = P(ankle[side] + np.array([0, 0.03, 0]))
            add(
                d,
                2,
                Prim("capsule", (k2, end, 0.05 * w * h, 0.042 * w * h), pants_col, pants_kind, chain, g, pat),
            )
        elif a.lower == "shorts":
            mid = P(hip[side] + 0.6 * (knee[side] - hip[side]))
            add(
                d,
                2,
                Prim(
                    "capsule", (h2, mid, 0.064 * w * h, 0.058 * w * h), pants_col, pants_kind, chain, g, pat
                ),
            )
        shoe_kind = f"shoe_{side}"
        sc = col(a.shoe_colour, 0.08)
        t2, he2 = P(toe[side]), P(heel[side])
        r_shoe = (0.024 if a.shoes != "sandals" else 0.016) * h
        add(
            d,
            3,
            Prim("capsule", (he2, t2, r_shoe, r_shoe * 0.9), sc, shoe_kind, chain, garment=f"shoe_{side}"),
        )
        if a.shoes == "boots":
            add(
                d,
                3,
                Prim(
                    "capsule",
                    (P(ankle[side] + np.array([0, 0.1, 0])), he2, 0.036 * w * h, 0.03 * h),
                    sc,
                    shoe_kind,
                    chain,
                    garment=f"shoe_{side}",
                ),
            )
        garments[f"shoe_{side}"] = "shoe"
    if lower_long and a.upper != "jumpsuit":
        garments["lower"] = "pants"
    elif a.lower == "shorts":
        garments["lower"] = "shorts"

    # --- skirts and the lower part of dresses (in front of the legs, behind the torso)
    if a.lower in ("skirt", "longskirt") or a.upper == "dress":
        bottom = {"skirt": 0.36, "longskirt": 0.13}.get(a.lower, 0.3)
        kind = "dress" if a.upper == "dress" else "skirt"
        colour = col(a.upper_colour if kind == "dress" else a.lower_colour)
        pattern = a.upper_pattern if kind == "dress" else a.lower_pattern
        pattern = None if pattern in ("plain", "logo", "splice") else pattern
        poly = torso_poly(0.53, bottom, 0.095, 0.12 + (0.52 - bottom) * 0.15)
        add(
            0.15,
            0,
            Prim("poly", (poly,), colour, kind, "lower", "upper" if kind == "dress" else "lower", pattern),
        )
        if kind == "skirt":
            garments["lower"] = "skirt"

    # --- torso
    upper_kind = {"dress": "dress", "jumpsuit": "jumpsuit_upper"}.get(a.upper, "upper")
    upper_col = col(a.upper_colour)
    up_pat = a.upper_pattern if a.upper_pattern in ("stripe", "plaid") else None
    add(
        0.0,
        0,
        Prim(
            "poly", (torso_poly(0.815, 0.49, 0.14, 0.105),), upper_col, upper_kind, "torso", "upper", up_pat
        ),
    )
    garments["upper"] = {
        "tshirt": "top, t-shirt, sweatshirt",
        "shirt": "shirt, blouse",
        "sweater": "sweater",
        "vest": "top, t-shirt, sweatshirt",
        "dress": "dress",
        "jumpsuit": "jumpsuit",
    }[a.upper]
    if a.upper_pattern == "splice":
        add(
            0.0,
            1,
            Prim(
                "poly",
                (torso_poly(0.64, 0.49, 0.125, 0.105),),
                col(a.pattern_colour),
                upper_kind,
                "torso",
                "upper",
            ),
        )
    if a.upper_pattern == "logo" and front > 0.3:
        lc = P(np.array([0.0, 0.7, -0.07]))
        add(
            0.0,
            1,
            Prim(
                "ellipse",
                (lc, (0.03 * h * abs(front) + 0.5, 0.028 * h), 0.0),
                col(a.pattern_colour),
                upper_kind,
                "torso",
                "upper",
            ),
        )
    if a.vneck and front > 0.4 and not a.coat:
        l, r = level(0.815, 0.05 * w)
        tip = P(np.array([0.0, 0.74, -0.07]))
        add(0.0, 2, Prim("poly", (np.array([l, r, tip]),), skin, "torso_skin", "torso"))
    if a.upper == "vest" and not a.coat:
        pass  # bare shoulders come from the skin arms
    if a.coat:
        coat_col = col(a.coat_colour)
        full = torso_poly(0.83, 0.33, 0.15, 0.14, 0.01)
        if front > 0.45:  # open coat: two panels show the shirt in between
            mid_top, mid_bot = P(np.array([0.0, 0.83, -0.07])), P(np.array([0.0, 0.33, -0.07]))
            gap = 0.018 * h
            left_panel = np.array([full[0], mid_top - [gap, 0], mid_bot - [gap, 0], full[4], full[5]])
            right_panel = np.array(
                [mid_top + np.array([gap, 0]), full[1], full[2], full[3], mid_bot + np.array([gap, 0])]
            )
            add(0.0, 3, Prim("poly", (left_panel,), coat_col, "coat", "torso", "coat"))
            add(0.0, 3, Prim("poly", (right_panel,), coat_col, "coat", "torso", "coat"))
        else:
            add(0.0, 3, Prim("poly", (full,), coat_col, "coat", "torso", "coat"))
        garments["coat"] = "coat"
    if a.bag == "shoulder" and abs(front) > 0.3:
        sh = P(shoulder["r"] + np.array([0, 0.01, -0.06 * np.sign(front)]))
        hp = P(hip["l"] + np.array([0.02, 0.03, -0.06 * np.sign(front)]))
        add(
            0.0,
            4,
            Prim("capsule", (sh, hp, 0.008 * h, 0.008 * h), col(a.bag_colour, 0.0), "none", "torso", "bag"),
        )
    if a.bag == "backpack" and front > 0.3:
        for side in ("l", "r"):
            s2 = P(shoulder[side] * np.array([0.6, 1, 1]) + np.array([0, 0.01, -0.07]))
            e2 = P(shoulder[side] * np.array([0.8, 1, 1]) + np.array([0, -0.17, -0.07]))
            add(
                0.0,
                4,
                Prim(
                    "capsule", (s2, e2, 0.009 * h, 0.009 * h), col(a.bag_colour, 0.0), "none", "torso", "bag"
                ),
            )
    if a.scarf:
        l, r = level(0.805, 0.075 * w, dz=-0.01)
        add(
            -0.02,
            5,
            Prim("capsule", (l, r, 0.025 * h, 0.025 * h), col(a.scarf_colour), "scarf", "torso", "scarf"),
        )
        if front > 0.3:
            e = P(np.array([0.03, 0.66, -0.08]))
            add(
                -0.02,
                5,
                Prim(
                    "capsule",
                    ((l + r) / 2, e, 0.018 * h, 0.015 * h),
                    col(a.scarf_colour),
                    "scarf",
                    "torso",
                    "scarf",
                ),
            )
        garments["scarf"] = "scarf"

    # --- arms
    long_sleeve = a.coat or a.upper in ("shirt", "sweater", "jumpsuit")
    short_sleeve = not long_sleeve and a.upper in ("tshirt", "dress")
    hands = np.zeros((2, 21, 2))
    hand_len = 0.07 * h
    for idx, (side, sg) in enumerate((("l", 1), ("r", -1))):
        chain = f"arm_{side}"
        # an arm goes behind the torso only when clearly on the far side (beyond the torso half-depth)
        d = P.depth(elbow[side]) * 0.7 + P.depth(shoulder[side]) * 0.3 - 0.07
        s2, e2, w2 = P(shoulder[side]), P(elbow[side]), P(wrist[side])
        arm_kind = f"arm_{side}"
        add(d, 0, Prim("capsule", (s2, e2, 0.036 * w * h, 0.029 * w * h), skin, arm_kind, chain))
        add(d, 0, Prim("capsule", (e2, w2, 0.029 * w * h, 0.024 * w * h), skin, arm_kind, chain))
        direction = w2 - e2
        norm = float(np.hypot(*direction)) or 1.0
        u = direction / norm
        n = np.array([-u[1], u[0]]) * (sg if front >= 0 else -sg)
        tip = w2 + u * hand_len * 0.85
        hand_kind = "glove" if a.gloves else arm_kind
        hand_col = col("black", 0.05) if a.gloves else skin
        add(
            d,
            2,
            Prim(
                "capsule",
                (w2, tip, 0.022 * h, 0.02 * h),
                hand_col,
                hand_kind,
                chain,
                f"glove_{side}" if a.gloves else None,
            ),
        )
        thumb0, thumb1 = w2 + (u * 0.15 - n * 0.25) * hand_len, w2 + (u * 0.6 - n * 0.5) * hand_len
        add(
            d,
            2,
            Prim(
                "capsule",
                (thumb0, thumb1, 0.01 * h, 0.008 * h),
                hand_col,
                hand_kind,
                chain,
                f"glove_{side}" if a.gloves else None,
            ),
        )
        if a.gloves:
            garments[f"glove_{side}"] = "glove"
        tpl = [(0.0, 0.0), (0.15, -0.25), (0.3, -0.38), (0.45, -0.46), (0.6, -0.5)]
        for b0, amax in ((-0.16, 0.95), (-0.05, 1.0), (0.06, 0.95), (0.16, 0.85)):
            tpl += [(0.45 + (amax - 0.45) * k / 3, b0 * (1 + 0.15 * k)) for k in range(4)]
        hands[idx] = np.array([w2 + (ta * u + tb * n) * hand_len for ta, tb in tpl])
        sleeve_col = col(a.coat_colour) if a.coat else upper_col
        sleeve_kind = "coat" if a.coat else upper_kind
        sleeve_g = "coat" if a.coat else "upper"
        if long_sleeve:
            add(
                d,
                1,
                Prim(
                    "capsule",
                    (s2, e2, 0.042 * w * h, 0.035 * w * h),
                    sleeve_col,
                    sleeve_kind,
                    chain,
                    sleeve_g,
                    None if a.coat else up_pat,
                ),
            )
            add(
                d,
                1,
                Prim(
                    "capsule",
                    (e2, w2 + (e2 - w2) * 0.05, 0.035 * w * h, 0.03 * w * h),
                    sleeve_col,
                    sleeve_kind,
                    chain,
                    sleeve_g,
                    None if a.coat else up_pat,
                ),
            )
        elif short_sleeve:
            m = s2 + 0.55 * (e2 - s2)
            add(
                d,
                1,
                Prim(
                    "capsule",
                    (s2, m, 0.044 * w * h, 0.04 * w * h),
                    sleeve_col,
                    sleeve_kind,
                    chain,
                    sleeve_g,
                    up_pat,
                ),
            )
        if a.bag in ("handbag", "plastic") and idx == 1:
            bc = (235, 235, 230) if a.bag == "plastic" else col(a.bag_colour, 0.0)
            bw, bh = (0.05, 0.07) if a.bag == "plastic" else (0.06, 0.045)
            top = w2 + np.array([0.0, 0.01 * h])
            poly = np.array(
                [
                    top - [bw * h / 2, 0],
                    top + np.array([bw * h / 2, 0]),
                    top + np.array([bw * h / 2, bh * h]),
                    top + np.array([-bw * h / 2, bh * h]),
                ]
            )
            add(d, 3, Prim("poly", (poly,), bc, "none", chain, "bag"))
    if a.bag == "shoulder":
        b = hip["l"] + np.array([0.06 * w, 0.02, -0.02])
        c2 = P(b)
        add(
            P.depth(b) - 0.05,
            0,
            Prim(
                "ellipse", (c2, (0.05 * h, 0.04 * h), 0.0), col(a.bag_colour, 0.0), "none", "bag_side", "bag"
            ),
        )
    if a.hold_front:
        c2 = (P(wrist["l"]) + P(wrist["r"])) / 2
        add(-0.2, 0, Prim("ellipse", (c2, (0.05 * h, 0.035 * h), 0.0), (180, 150, 100), "none", "held", None))
    if a.bag == "backpack":
        c3 = np.array([0.0, 0.64, 0.12])
        c2 = P(c3)
        add(
            P.depth(c3),
            0,
            Prim(
                "ellipse",
                (c2, (0.09 * w * h * max(abs(P.c), 0.6), 0.12 * h), 0.0),
                col(a.bag_colour, 0.0),
                "none",
                "backpack",
                "bag",
            ),
        )
    if a.bag != "none":
        garments["bag"] = "bag, wallet"

    # --- head: neck, face, hair, hat, glasses
    nk0, nk1 = P(neck), P(head_c)
    add(-0.05, 0, Prim("capsule", (nk0, nk1, 0.028 * h, 0.028 * h), skin, "torso_skin", "head_neck"))
    hair_col = col(a.hair_colour, 0.08)
    face_axes = (head_rx * h, head_r * h)
    back_dir = np.array([P.s, 0.0])  # image direction toward the back of the head
    if a.hair_style == "long":
        top = P(head_c + np.array([0, 0.02, 0.06]))
        bot = P(np.array([0.0, 0.7, 0.07]))
        add(
            P.depth(np.array([0, 0, 0.08])),
            0,
            Prim("capsule", (top, bot, 0.058 * h, 0.07 * h), hair_col, "hair", "hair_back", "hair"),
        )
    if front > 0.5:
        if a.hair_style != "bald":
            add(
                -0.06,
                0,
                Prim(
                    "ellipse",
                    (hc2 + np.array([0, -0.01 * h]), (face_axes[0] * 1.12, face_axes[1] * 1.08), 0.0),
                    hair_col,
                    "hair",
                    "head_hair",
                ),
            )
        add(
            -0.06,
            1,
            Prim(
                "ellipse",
                (hc2 + np.array([0, 0.008 * h]), (face_axes[0] * 0.92, face_axes[1] * 0.9), 0.0),
                skin,
                "face",
                "head_face",
            ),
        )
        if a.hair_style != "bald":
            add(
                -0.06,
                2,
                Prim(
                    "ellipse_top",
                    (hc2 + np.array([0, -0.012 * h]), (face_axes[0] * 1.02, face_axes[1] * 0.55), 0.0),
                    hair_col,
                    "hair",
                    "head_hair",
                ),
            )
    else:
        add(-0.06, 1, Prim("ellipse", (hc2, face_axes, 0.0), skin, "face", "head_face"))
        if a.hair_style != "bald":
            shift = back_dir * face_axes[0] * (0.6 if front > -0.5 else 0.0) + np.array([0, -0.01 * h])
            add(
                -0.06,
                2,
                Prim(
                    "ellipse",
                    (hc2 + shift, (face_axes[0] * (0.8 if front > -0.5 else 1.06), face_axes[1] * 1.02), 0.0),
                    hair_col,
                    "hair",
                    "head_hair",
                ),
            )
    if front > -0.5:  # eyes and mouth are part of the face class, drawn darker
        for k in (1, 2):
            if body_front[k]:
                add(
                    -0.06,
                    3,
                    Prim(
                        "ellipse",
                        (body[k], (0.006 * h + 0.4, 0.005 * h + 0.4), 0.0),
                        (40, 30, 30),
                        "face",
                        "head_face",
                    ),
                )
    if front > 0.2:  # mouth
        mouth = P(head_pt(0.0, -0.5, -0.86))
        add(
            -0.06,
            3,
            Prim(
                "ellipse",
                (mouth, (0.011 * h * front + 0.4, 0.0035 * h + 0.4), 0.0),
                (150, 62, 60),
                "face",
                "head_face",
            ),
        )
    if a.glasses and front > -0.3:
        vis = [body[k] for k in (1, 2) if body_front[k]]
        if vis:
            l = min(v[0] for v in vis) - 0.012 * h
            r = max(v[0] for v in vis) + 0.012 * h
            y = float(np.mean([v[1] for v in vis]))
            add(
                -0.06,
                4,
                Prim(
                    "capsule",
                    (np.array([l, y]), np.array([r, y]), 0.009 * h, 0.009 * h),
                    (20, 20, 25),
                    "sunglasses",
                    "head_glasses",
                    "glasses",
                ),
            )
            garments["glasses"] = "glasses"
    if a.hat:
        hat_c = hc2 + np.array([0, -0.035 * h])
        add(
            -0.06,
            5,
            Prim(
                "ellipse_top",
                (hat_c, (face_axes[0] * 1.15, face_axes[1] * 0.85), 0.0),
                col(a.hat_colour),
                "hat",
                "head_hat",
                "hat",
            ),
        )
        brim_l, brim_r = hat_c + np.array([-face_axes[0] * 1.3, 0]), hat_c + np.array([face_axes[0] * 1.3, 0])
        add(
            -0.06,
            5,
            Prim(
                "capsule", (brim_l, brim_r, 0.009 * h, 0.009 * h), col(a.hat_colour), "hat", "head_hat", "hat"
            ),
        )
        garments["hat"] = "hat"

    # --- whole-body extras: feet and the 68 face points
    foot = np.array(
        [
            P(toe["l"] + [0.012, 0, 0]),
            P(toe["l"] - [0.012, 0, 0]),
            P(heel["l"]),
            P(toe["r"] - [0.012, 0, 0]),
            P(toe["r"] + [0.012, 0, 0]),
            P(heel["r"]),
        ]
    )
    face3 = head_c + np.asarray(_face_template()) * np.array([head_rx, head_r, head_rx])
    face_pts = P.many(face3)
    rel = face3 - head_c
    face_front = (-rel[:, 0] * P.s + rel[:, 2] * P.c) < 0.1 * head_rx
    hb = np.array([hc2 - np.array(face_axes) * 1.15, hc2 + np.array(face_axes) * 1.1])
    head_box = (float(hb[0, 0]), float(hb[0, 1]), float(hb[1, 0] - hb[0, 0]), float(hb[1, 1] - hb[0, 1]))
    return PersonDraw(
        prims, body, body_front, body_chains, foot, face_pts, face_front, hands, hand_len, head_box, garments
    )


_FACE_CACHE: list[tuple[float, float, float]] = []


def _face_template() -> list[tuple[float, float, float]]:
    """68 points (jaw 17, brows 10, nose 9, eyes 12, mouth 20) on the unit head ellipsoid's front."""
    if _FACE_CACHE:
        return _FACE_CACHE
    pts: list[tuple[float, float]] = []
    pts += [(-0.95 + 1.9 * i / 16, -0.15 - 0.75 * np.sin(np.pi * i / 16)) for i in range(17)]  # jaw
    pts += [(-0.7 + 0.1 * i, 0.35 + 0.05 * np.sin(np.pi * i / 4)) for i in range(5)]  # right brow
    pts += [(0.3 + 0.1 * i, 0.35 + 0.05 * np.sin(np.pi * i / 4)) for i in range(5)]  # left brow
    pts += [(0.0, 0.2 - 0.1 * i) for i in range(4)] + [(-0.2 + 0.1 * i, -0.25) for i in range(5)]  # nose
    for cx in (-0.38, 0.38):  # eyes
        pts += [
            (cx + 0.12 * np.cos(t), 0.12 + 0.05 * np.sin(t))
            for t in np.linspace(np.pi, -np.pi, 6, endpoint=False)
        ]
    pts += [
        (0.3 * np.cos(t), -0.5 + 0.12 * np.sin(t)) for t in np.linspace(np.pi, -np.pi, 12, endpoint=False)
    ]
    pts += [
        (0.18 * np.cos(t), -0.5 + 0.05 * np.sin(t)) for t in np.linspace(np.pi, -np.pi, 8, endpoint=False)
    ]
    out = []
    for x, y in pts:
        z = -float(np.sqrt(max(0.05, 1.0 - x * x - y * y * 0.5)))
        out.append((float(x), float(y), z))
    _FACE_CACHE.extend(out)
    return _FACE_CACHE


# ------------------------------------------------------------------------------------------------ drawing


def _pts(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * _SCALE).astype(np.int32)


def _capsule_poly(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    d = np.asarray(p1, float) - np.asarray(p0, float)
    n = np.hypot(*d)
    if n < 1e-6:
        return np.array([p0, p0, p0])
    perp = np.array([-d[1], d[0]]) / n
    return np.array([p0 + perp * r0, p1 + perp * r1, p1 - perp * r1, p0 - perp * r0])


def draw_prim(targets: list[tuple[np.ndarray, object]], prim: Prim) -> None:
    """Draw one primitive identically into each (image, value) target."""
    if prim.shape == "poly":
        pts = _pts(prim.geom[0])
        for img, val in targets:
            cv2.fillPoly(img, [pts], val, lineType=cv2.LINE_8, shift=_SHIFT)
    elif prim.shape == "capsule":
        p0, p1, r0, r1 = prim.geom
        r0, r1 = max(r0, 0.6), max(r1, 0.6)
        quad = _pts(_capsule_poly(np.asarray(p0, float), np.asarray(p1, float), r0, r1))
        c0, c1 = _pts(p0), _pts(p1)
        for img, val in targets:
            cv2.fillConvexPoly(img, quad, val, lineType=cv2.LINE_8, shift=_SHIFT)
            cv2.circle(img, (int(c0[0]), int(c0[1])), round(r0 * _SCALE), val, -1, cv2.LINE_8, _SHIFT)
            cv2.circle(img, (int(c1[0]), int(c1[1])), round(r1 * _SCALE), val, -1, cv2.LINE_8, _SHIFT)
    else:  # ellipse / ellipse_top
        c, axes, angle = prim.geom
        cc = _pts(c)
        ax = (max(1, round(axes[0] * _SCALE)), max(1, round(axes[1] * _SCALE)))
        start, end = (180, 360) if prim.shape == "ellipse_top" else (0, 360)
        for img, val in targets:
            cv2.ellipse(img, (int(cc[0]), int(cc[1])), ax, angle, start, end, val, -1, cv2.LINE_8, _SHIFT)
