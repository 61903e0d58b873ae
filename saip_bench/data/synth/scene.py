"""Scenes: backgrounds, one or many people drawn into one image, labels read back from the pixels.

``render_scene`` returns the RGB image together with the primitive map and lookup tables; the helpers
below turn that into LIP/CIHP maps, instance masks, garment masks, boxes and keypoints with visibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from saip_bench.data.synth.appearance import Appearance
from saip_bench.data.synth.render import CIHP_OF_KIND, LIP_OF_KIND, PersonDraw, Pose, build_person, draw_prim
from saip_bench.data.synth.vocab import COLOURS

FACE_MIN_PX = 9.0  # head height below which face points are not annotated (as in COCO-WholeBody)
HAND_MIN_PX = 5.0


@dataclass
class PersonSpec:
    appearance: Appearance
    pose: Pose
    foot_x: float
    foot_y: float
    height: float  # pixel height of an average adult standing


@dataclass
class PersonLabels:
    keypoints: np.ndarray  # (17, 3) x, y, v (v 0/1/2)
    foot: np.ndarray  # (6, 3) v 0/1/2
    face: np.ndarray  # (68, 3) v 0/1 float
    lefthand: np.ndarray  # (21, 3)
    righthand: np.ndarray  # (21, 3)
    head_box: tuple[float, float, float, float]
    full_box: tuple[float, float, float, float]  # may extend outside the image
    garments: dict[str, str]


@dataclass
class SceneRender:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    prim_map: np.ndarray  # (H, W) int32, 0 = background, else primitive index + 1
    prim_person: np.ndarray  # (n_prims + 1,) person index, -1 for background
    prim_lip: np.ndarray
    prim_cihp: np.ndarray
    prim_garment: list[str | None]
    prim_chain: list[str]
    people: list[PersonLabels]

    def person_map(self) -> np.ndarray:
        """(H, W) person index + 1 over every drawn pixel (bags included), 0 elsewhere."""
        if getattr(self, "_person_map", None) is None:
            self._person_map = (self.prim_person[self.prim_map] + 1).astype(np.int32)
        return self._person_map.copy()

    def lip_map(self) -> np.ndarray:
        return self.prim_lip[self.prim_map].astype(np.uint8)

    def cihp_map(self) -> np.ndarray:
        if getattr(self, "_cihp_map", None) is None:
            self._cihp_map = self.prim_cihp[self.prim_map].astype(np.uint8)
        return self._cihp_map.copy()

    def body_mask(self, person: int) -> np.ndarray:
        """Pixels of the person's body and clothes (carried bags/objects excluded)."""
        self.person_map()
        self.cihp_map()
        return (self._person_map == person + 1) & (self._cihp_map > 0)

    def garment_mask(self, person: int, garment: str) -> np.ndarray:
        ids = [i for i, g in enumerate(self.prim_garment) if g == garment and self.prim_person[i] == person]
        return np.isin(self.prim_map, ids)


# ------------------------------------------------------------------------------------------ backgrounds


def make_background(
    rng: np.random.Generator, height: int, width: int, indoor: bool | None = None
) -> np.ndarray:
    """A person-free street/indoor scene: sky or wall, ground plane, blocks, windows, stripes, texture."""
    if indoor is None:
        indoor = bool(rng.random() < 0.35)
    img = np.empty((height, width, 3), np.float32)
    horizon = int(height * rng.uniform(0.3, 0.62))
    top = rng.uniform(60, 230, 3) if indoor else np.array([150, 185, 225]) * rng.uniform(0.7, 1.1)
    ground = rng.uniform(70, 170, 3) * np.array(rng.uniform(0.8, 1.1, 3))
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img[:] = top * (1 - 0.25 * ys) + 0.0
    img[horizon:] = ground * (0.8 + 0.3 * ys[horizon:])
    n_blocks = int(rng.integers(2, 7))
    for _ in range(n_blocks):
        x0 = int(rng.integers(-width // 4, width))
        bw = int(rng.integers(width // 8, width // 2))
        bh = int(rng.integers(height // 8, max(height // 8 + 1, horizon)))
        colour = rng.uniform(50, 220, 3)
        cv2.rectangle(img, (x0, horizon - bh), (x0 + bw, horizon), colour.tolist(), -1)
        if rng.random() < 0.7:  # windows
            step = max(4, int(bw / rng.integers(3, 7)))
            wc = (colour * rng.uniform(0.4, 0.8)).tolist()
            for wx in range(x0 + step // 3, x0 + bw - step // 2, step):
                for wy in range(horizon - bh + step // 3, horizon - step // 2, step):
                    cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), wc, -1)
    if not indoor and rng.random() < 0.6:  # road markings
        for _k in range(int(rng.integers(1, 4))):
            y = int(horizon + (height - horizon) * rng.uniform(0.2, 0.9))
            cv2.line(
                img, (0, y), (width, y + int(rng.integers(-10, 10))), (225, 225, 215), max(1, height // 90)
            )
    if rng.random() < 0.5:  # a pole or a tree trunk
        x = int(rng.integers(0, width))
        cv2.rectangle(
            img,
            (x, int(horizon * rng.uniform(0, 0.5))),
            (x + max(2, width // 50), horizon + 4),
            rng.uniform(30, 120, 3).tolist(),
            -1,
        )
    noise = rng.normal(0, 1, (max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    img += noise * rng.uniform(4, 14)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    return np.clip(img, 0, 255).astype(np.uint8)


def background_crop(pool: list[np.ndarray], rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop of a pooled background, resized, flipped and re-tinted: cheap variety."""
    src = pool[int(rng.integers(len(pool)))]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    ch, cw = max(8, int(sh * scale)), max(8, int(min(sw, sh * scale * width / height)))
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = cv2.resize(src[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tint = rng.uniform(0.85, 1.15, 3)
    return np.clip(crop.astype(np.float32) * tint, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- drawing


def _apply_patterns(
    image: np.ndarray,
    prim_map: np.ndarray,
    patterned: list[tuple[int, str, tuple, float]],
) -> None:
    """Stripes / plaid / dots in image space, clipped to the garment's own pixels."""
    groups: dict[tuple[str, tuple, float], list[int]] = {}
    for pid, pattern, colour, period in patterned:
        groups.setdefault((pattern, colour, period), []).append(pid)
    for (pattern, colour, period), ids in groups.items():
        mask = np.isin(prim_map, ids)
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        p = max(2, round(period))
        if pattern == "stripe":
            on = (ys // p) % 2 == 0
        elif pattern == "plaid":
            on = ((ys // p) % 3 == 0) | ((xs // p) % 3 == 0)
        else:  # dots / generic pattern
            on = ((ys // p) % 2 == 0) & ((xs // p) % 2 == 0)
        image[ys[on], xs[on]] = colour


def render_scene(background: np.ndarray, people: list[PersonSpec], rng: np.random.Generator) -> SceneRender:
    """Draw people far-to-near (by foot y) onto a copy of ``background`` and read every label back."""
    height, width = background.shape[:2]
    image = background.copy()
    prim_map = np.zeros((height, width), np.int32)
    order = sorted(range(len(people)), key=lambda i: (people[i].foot_y, i))
    draws: list[PersonDraw | None] = [None] * len(people)
    prim_person, prim_lip, prim_cihp, prim_garment, prim_chain = [-1], [0], [0], [None], [None]
    patterned = []
    for pi in order:
        spec = people[pi]
        draw = build_person(spec.appearance, spec.pose, spec.foot_x, spec.foot_y, spec.height)
        draws[pi] = draw
        period = max(2.0, spec.height * 0.022)
        for _, _, prim in sorted(draw.prims, key=lambda t: (-t[0], t[1])):
            pid = len(prim_person)
            prim_person.append(pi)
            prim_lip.append(LIP_OF_KIND[prim.kind])
            prim_cihp.append(CIHP_OF_KIND[prim.kind])
            prim_garment.append(prim.garment)
            prim_chain.append(prim.chain)
            draw_prim([(image, tuple(int(c) for c in prim.colour)), (prim_map, pid)], prim)
            if prim.pattern:
                a = spec.appearance
                pc = COLOURS[
                    a.pattern_colour
                    if prim.garment == "upper"
                    else "white"
                    if a.lower_colour != "white"
                    else "black"
                ]
                patterned.append((pid, prim.pattern, pc, period))
    _apply_patterns(image, prim_map, patterned)
    image = _shade(image, prim_map, rng)
    table_person = np.asarray(prim_person, np.int32)
    scene = SceneRender(
        image,
        prim_map,
        table_person,
        np.asarray(prim_lip, np.uint8),
        np.asarray(prim_cihp, np.uint8),
        prim_garment,
        [c or "" for c in prim_chain],
        [],
    )
    chains = np.asarray(scene.prim_chain, dtype=object)
    scene.people = [_person_labels(scene, chains, i, people[i], draws[i]) for i in range(len(people))]
    return scene


def _shade(image: np.ndarray, prim_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round every primitive (darker toward its outline) and light from one side: shapes read as 3-D."""
    edge = np.zeros(prim_map.shape, bool)
    edge[:, 1:] |= prim_map[:, 1:] != prim_map[:, :-1]
    edge[:, :-1] |= prim_map[:, 1:] != prim_map[:, :-1]
    edge[1:] |= prim_map[1:] != prim_map[:-1]
    edge[:-1] |= prim_map[1:] != prim_map[:-1]
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    fg = prim_map > 0
    scale = max(1.5, image.shape[0] / 60)
    shade = np.where(fg, 0.7 + 0.3 * np.minimum(dist / scale, 1.0), 1.0).astype(np.float32)
    xs = np.linspace(-1, 1, image.shape[1], dtype=np.float32)[None, :]
    light = 1.0 + rng.uniform(-0.12, 0.12) * xs
    out = image.astype(np.float32) * (shade * np.where(fg, light, 1.0))[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _person_labels(
    scene: SceneRender, chains: np.ndarray, person: int, spec: PersonSpec, draw: PersonDraw
) -> PersonLabels:
    height, width = scene.prim_map.shape

    def owner(pt: np.ndarray) -> tuple[int, str]:
        x, y = int(np.floor(pt[0])), int(np.floor(pt[1]))
        if not (0 <= x < width and 0 <= y < height):
            return -2, ""
        pid = scene.prim_map[y, x]
        return int(scene.prim_person[pid]), str(chains[pid])

    def inside(pt: np.ndarray) -> bool:
        return 0 <= pt[0] < width and 0 <= pt[1] < height

    kps = np.zeros((17, 3))
    for k in range(17):
        pt = draw.body[k]
        if not inside(pt):
            continue
        who, chain = owner(pt)
        visible = who == person and chain in draw.body_chains[k] and bool(draw.body_front[k])
        kps[k] = (pt[0], pt[1], 2 if visible else 1)
    foot = np.zeros((6, 3))
    for k in range(6):
        pt = draw.foot[k]
        if inside(pt):
            who, chain = owner(pt)
            foot[k] = (pt[0], pt[1], 2 if who == person and chain == f"leg_{'l' if k < 3 else 'r'}" else 1)
    face = np.zeros((68, 3))
    head_h = draw.head_box[3]
    if head_h >= FACE_MIN_PX and kps[0, 2] == 2:
        for k in range(68):
            pt = draw.face[k]
            if inside(pt) and draw.face_front[k]:
                face[k] = (pt[0], pt[1], 1.0)
    hands = []
    for idx, _side in enumerate(("l", "r")):
        hk = np.zeros((21, 3))
        if draw.hand_len >= HAND_MIN_PX and kps[9 + idx, 2] == 2:
            for k in range(21):
                pt = draw.hands[idx, k]
                if inside(pt):
                    hk[k] = (pt[0], pt[1], 1.0)
        hands.append(hk)
    # full-body box: the whole (possibly truncated or occluded) figure from the skeleton + head
    pts = np.concatenate(
        [draw.body, draw.foot, draw.hands.reshape(-1, 2), np.array([[draw.head_box[0], draw.head_box[1]]])]
    )
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    pad = 0.03 * spec.height
    full_box = (float(x0 - pad), float(y0), float(x1 - x0 + 2 * pad), float(y1 - y0 + 0.01 * spec.height))
    return PersonLabels(kps, foot, face, hands[0], hands[1], draw.head_box, full_box, draw.garments)


# ---------------------------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class Camera:
    """A fixed camera: colour cast, brightness, blur, sensor noise, resolution loss."""

    gain: tuple[float, float, float]
    brightness: float
    blur: float
    noise: float
    downscale: float


def make_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        gain=tuple(float(g) for g in rng.uniform(0.87, 1.13, 3)),
        brightness=float(rng.uniform(0.8, 1.15)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.0, 6.0)),
        downscale=float(rng.uniform(0.6, 1.0)),
    )


def apply_camera(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Per-camera look plus per-image jitter; labels are unaffected (no geometric change)."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    if camera.downscale < 0.95:
        small = cv2.resize(
            out,
            (max(4, int(w * camera.downscale)), max(4, int(h * camera.downscale))),
            interpolation=cv2.INTER_AREA,
        )
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = camera.blur + rng.uniform(0.0, 0.4)
    if sigma > 0.25:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out *= np.asarray(camera.gain, np.float32) * camera.brightness * rng.uniform(0.9, 1.1)
    out += rng.normal(0.0, camera.noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
