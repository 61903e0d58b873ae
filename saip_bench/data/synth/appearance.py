"""Identities: a fixed appearance (body, clothes, accessories) and everything derived from it.

Attributes (PA-100K's 26, PETA's 105) and captions are functions of the appearance (plus the viewpoint of
one image for Front/Side/Back), so labels and pixels agree by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from saip_bench.data.synth.vocab import COLOURS, HAIR_COLOURS, PA100K_ATTRIBUTES, PETA_ATTRIBUTES, SKIN_TONES

CLOTH_COLOURS = list(COLOURS)


@dataclass(frozen=True)
class Appearance:
    """Everything that stays fixed for one identity across its images."""

    female: bool
    age: int
    height: float  # relative body height (1.0 = average adult)
    width: float  # relative body width
    skin: tuple[int, int, int]
    hair_style: str  # short | long | bald
    hair_colour: str
    upper: str  # tshirt | shirt | sweater | vest | dress | jumpsuit
    upper_colour: str
    upper_pattern: str  # plain | stripe | plaid | logo | splice
    pattern_colour: str
    vneck: bool
    coat: bool
    coat_colour: str
    lower: str  # trousers | shorts | skirt | longskirt | (none when dress/jumpsuit)
    lower_colour: str
    lower_pattern: str  # plain | stripe | pattern
    shoes: str  # sneaker | leather | boots | sandals
    shoe_colour: str
    socks: bool
    hat: bool
    hat_colour: str
    glasses: bool
    scarf: bool
    scarf_colour: str
    gloves: bool
    bag: str  # none | backpack | handbag | shoulder | plastic
    bag_colour: str
    hold_front: bool
    tone: float  # per-identity fabric shade jitter in [-1, 1]

    def to_json(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, options: list, probs: list[float] | None = None):
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        return options[int(rng.choice(len(options), p=p / p.sum()))]
    return options[int(rng.integers(len(options)))]


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one identity; marginal rates keep every evaluated attribute neither rare nor constant."""
    female = bool(rng.random() < 0.5)
    age = int(_pick(rng, [10, 16, 25, 33, 40, 52, 58, 68], [0.06, 0.08, 0.2, 0.2, 0.16, 0.1, 0.08, 0.12]))
    height = float(rng.uniform(0.9, 1.08) * (0.8 if age < 15 else 1.0))
    width = float(rng.uniform(0.85, 1.2))
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    hair_style = _pick(rng, ["short", "long", "bald"], [0.35, 0.6, 0.05] if female else [0.75, 0.15, 0.1])
    hair_colour = (
        "grey"
        if age > 60 and rng.random() < 0.7
        else _pick(rng, HAIR_COLOURS, [0.45, 0.3, 0.05, 0.1, 0.03, 0.07])
    )
    upper = _pick(
        rng,
        ["tshirt", "shirt", "sweater", "vest", "dress", "jumpsuit"],
        [0.3, 0.25, 0.13, 0.1, 0.17 if female else 0.02, 0.05],
    )
    upper_colour = _pick(rng, CLOTH_COLOURS)
    upper_pattern = _pick(rng, ["plain", "stripe", "plaid", "logo", "splice"], [0.45, 0.15, 0.13, 0.14, 0.13])
    pattern_colour = _pick(rng, [c for c in CLOTH_COLOURS if c != upper_colour])
    coat = bool(upper not in ("vest", "jumpsuit") and rng.random() < 0.22)
    coat_colour = _pick(rng, ["black", "grey", "brown", "blue", "green", "red", "white"])
    if upper in ("dress", "jumpsuit"):
        lower, lower_colour = "none", upper_colour
    else:
        lower = _pick(
            rng,
            ["trousers", "shorts", "skirt", "longskirt"],
            [0.55, 0.2, 0.15, 0.1] if female else [0.72, 0.26, 0.01, 0.01],
        )
        lower_colour = _pick(rng, CLOTH_COLOURS)
    lower_pattern = _pick(rng, ["plain", "stripe", "pattern"], [0.7, 0.15, 0.15])
    shoes = _pick(rng, ["sneaker", "leather", "boots", "sandals"], [0.42, 0.25, 0.18, 0.15])
    shoe_colour = _pick(rng, ["black", "white", "brown", "grey", "blue", "red"])
    bag = _pick(rng, ["none", "backpack", "handbag", "shoulder", "plastic"], [0.34, 0.2, 0.16, 0.18, 0.12])
    return Appearance(
        female=female,
        age=age,
        height=height,
        width=width * (0.92 if female else 1.0),
        skin=skin,
        hair_style=hair_style,
        hair_colour=hair_colour,
        upper=upper,
        upper_colour=upper_colour,
        upper_pattern="plain" if upper == "jumpsuit" else upper_pattern,
        pattern_colour=pattern_colour,
        vneck=bool(upper in ("tshirt", "sweater", "dress", "vest") and rng.random() < 0.25),
        coat=coat,
        coat_colour=coat_colour,
        lower=lower,
        lower_colour=lower_colour,
        lower_pattern=lower_pattern if lower in ("trousers", "shorts", "skirt", "longskirt") else "plain",
        shoes=shoes,
        shoe_colour=shoe_colour,
        socks=bool(lower in ("shorts", "skirt") and rng.random() < 0.4),
        hat=bool(rng.random() < 0.2),
        hat_colour=_pick(rng, ["black", "white", "red", "blue", "grey", "yellow"]),
        glasses=bool(rng.random() < 0.18),
        scarf=bool(rng.random() < 0.14),
        scarf_colour=_pick(rng, ["red", "grey", "white", "purple", "green", "yellow"]),
        gloves=bool(rng.random() < 0.07),
        bag=bag,
        bag_colour=_pick(rng, ["black", "brown", "red", "blue", "grey"]),
        hold_front=bool(rng.random() < 0.15),
        tone=float(rng.uniform(-1, 1)),
    )


def view_name(yaw_deg: float) -> str:
    """front / back / side from the body yaw (0 = facing the camera)."""
    c = np.cos(np.deg2rad(yaw_deg))
    return "front" if c > 0.5 else "back" if c < -0.5 else "side"


def is_sleeve_long(a: Appearance) -> bool:
    return a.coat or a.upper in ("shirt", "sweater", "jumpsuit")


def is_sleeve_short(a: Appearance) -> bool:
    return not is_sleeve_long(a) and a.upper in ("tshirt", "dress")


def pa100k_labels(a: Appearance, view: str) -> list[int]:
    """The 26 PA-100K labels in the official order."""
    v = {
        "Female": a.female,
        "AgeOver60": a.age > 60,
        "Age18-60": 18 <= a.age <= 60,
        "AgeLess18": a.age < 18,
        "Front": view == "front",
        "Side": view == "side",
        "Back": view == "back",
        "Hat": a.hat,
        "Glasses": a.glasses,
        "HandBag": a.bag == "handbag",
        "ShoulderBag": a.bag == "shoulder",
        "Backpack": a.bag == "backpack",
        "HoldObjectsInFront": a.hold_front,
        "ShortSleeve": is_sleeve_short(a),
        "LongSleeve": is_sleeve_long(a),
        "UpperStride": a.upper_pattern == "stripe",
        "UpperLogo": a.upper_pattern == "logo",
        "UpperPlaid": a.upper_pattern == "plaid",
        "UpperSplice": a.upper_pattern == "splice",
        "LowerStripe": a.lower_pattern == "stripe",
        "LowerPattern": a.lower_pattern == "pattern",
        "LongCoat": a.coat,
        "Trousers": a.lower == "trousers" or a.upper == "jumpsuit",
        "Shorts": a.lower == "shorts",
        "Skirt&Dress": a.lower in ("skirt", "longskirt") or a.upper == "dress",
        "boots": a.shoes == "boots",
    }
    return [int(v[name]) for name in PA100K_ATTRIBUTES]


def peta_labels(a: Appearance) -> list[int]:
    """All 105 PETA columns (first 35 evaluated); colours come from what is painted."""
    formal_upper = a.coat or (a.upper == "shirt" and a.upper_pattern == "plain")
    formal_lower = (
        a.lower == "trousers" and a.lower_colour in ("black", "grey", "blue") and a.lower_pattern == "plain"
    )
    lower_colour = a.upper_colour if a.upper in ("dress", "jumpsuit") else a.lower_colour
    upper_colour = a.coat_colour if a.coat else a.upper_colour
    accessory = a.hat or a.glasses or a.scarf
    v: dict[str, bool] = {
        "personalLess30": a.age < 30,
        "personalLess45": 30 <= a.age < 45,
        "personalLess60": 45 <= a.age < 60,
        "personalLarger60": a.age >= 60,
        "carryingBackpack": a.bag == "backpack",
        "carryingOther": a.bag == "handbag" or a.hold_front,
        "lowerBodyCasual": not formal_lower,
        "upperBodyCasual": not formal_upper,
        "lowerBodyFormal": formal_lower,
        "upperBodyFormal": formal_upper,
        "accessoryHat": a.hat,
        "upperBodyJacket": a.coat,
        "lowerBodyJeans": a.lower == "trousers" and a.lower_colour == "blue",
        "footwearLeatherShoes": a.shoes == "leather",
        "upperBodyLogo": a.upper_pattern == "logo",
        "hairLong": a.hair_style == "long",
        "personalMale": not a.female,
        "carryingMessengerBag": a.bag == "shoulder",
        "accessoryMuffler": a.scarf,
        "accessoryNothing": not accessory,
        "carryingNothing": a.bag == "none" and not a.hold_front,
        "upperBodyPlaid": a.upper_pattern == "plaid",
        "carryingPlasticBags": a.bag == "plastic",
        "footwearSandals": a.shoes == "sandals",
        "footwearShoes": a.shoes in ("leather", "boots"),
        "lowerBodyShorts": a.lower == "shorts",
        "upperBodyShortSleeve": is_sleeve_short(a),
        "lowerBodyShortSkirt": a.lower == "skirt",
        "footwearSneaker": a.shoes == "sneaker",
        "upperBodyThinStripes": a.upper_pattern == "stripe",
        "accessorySunglasses": a.glasses,
        "lowerBodyTrousers": a.lower == "trousers" or a.upper == "jumpsuit",
        "upperBodyTshirt": a.upper == "tshirt" and not a.coat,
        "upperBodyOther": a.upper in ("vest", "jumpsuit"),
        "upperBodyVNeck": a.vneck and not a.coat,
        "accessoryHeadphone": False,
        "personalLess15": a.age < 15,
        "carryingBabyBuggy": False,
        "hairBald": a.hair_style == "bald",
        "footwearBoots": a.shoes == "boots",
        "lowerBodyCapri": False,
        "carryingShoppingTro": False,
        "carryingUmbrella": False,
        "personalFemale": a.female,
        "carryingFolder": a.hold_front,
        "accessoryHairBand": False,
        "lowerBodyHotPants": False,
        "accessoryKerchief": False,
        "lowerBodyLongSkirt": a.lower == "longskirt" or a.upper == "dress",
        "upperBodyLongSleeve": is_sleeve_long(a),
        "lowerBodyPlaid": False,
        "lowerBodyThinStripes": a.lower_pattern == "stripe",
        "carryingLuggageCase": False,
        "upperBodyNoSleeve": a.upper == "vest" and not a.coat,
        "hairShort": a.hair_style == "short",
        "footwearStocking": a.socks,
        "upperBodySuit": a.coat and a.coat_colour in ("black", "grey"),
        "carryingSuitcase": False,
        "lowerBodySuits": formal_lower and a.coat,
        "upperBodySweater": a.upper == "sweater",
        "upperBodyThickStripes": False,
    }
    for colour in COLOURS:
        cap = colour.capitalize()
        v[f"upperBody{cap}"] = upper_colour == colour
        v[f"lowerBody{cap}"] = lower_colour == colour
        v[f"hair{cap}"] = a.hair_style != "bald" and a.hair_colour == colour
        v[f"footwear{cap}"] = a.shoe_colour == colour
    return [int(bool(v[name])) for name in PETA_ATTRIBUTES]


# ---------------------------------------------------------------------------------------------- captions

_UPPER_NOUNS = {
    "tshirt": ["t-shirt", "short-sleeved shirt", "tee"],
    "shirt": ["long-sleeved shirt", "shirt", "button-up shirt"],
    "sweater": ["sweater", "jumper", "knit sweater"],
    "vest": ["sleeveless top", "tank top", "vest top"],
    "dress": ["dress", "knee-length dress"],
    "jumpsuit": ["jumpsuit", "one-piece jumpsuit"],
}
_LOWER_NOUNS = {
    "trousers": ["trousers", "pants", "long pants"],
    "shorts": ["shorts", "short pants"],
    "skirt": ["short skirt", "skirt", "mini skirt"],
    "longskirt": ["long skirt", "maxi skirt"],
}
_SHOE_NOUNS = {
    "sneaker": ["sneakers", "trainers"],
    "leather": ["leather shoes", "dress shoes"],
    "boots": ["boots", "ankle boots"],
    "sandals": ["sandals"],
}
_BAG_NOUNS = {
    "backpack": ["backpack", "rucksack"],
    "handbag": ["handbag", "purse"],
    "shoulder": ["shoulder bag", "messenger bag"],
    "plastic": ["plastic bag", "shopping bag"],
}
_PATTERN_PHRASES = {
    "stripe": ["with {c} stripes", "with thin {c} stripes"],
    "plaid": ["with a {c} plaid pattern"],
    "logo": ["with a {c} logo on the front", "with a small {c} logo"],
    "splice": ["with {c} panels", "with a {c} lower half"],
}


def caption_colour_words(a: Appearance) -> set[str]:
    """Every colour word a caption of this identity may truthfully use."""
    words = {a.upper_colour, a.lower_colour, a.shoe_colour}
    if a.hair_style != "bald":
        words.add(a.hair_colour)
    if a.upper_pattern != "plain":
        words.add(a.pattern_colour)
    if a.coat:
        words.add(a.coat_colour)
    if a.hat:
        words.add(a.hat_colour)
    if a.scarf:
        words.add(a.scarf_colour)
    if a.bag != "none":
        words.add(a.bag_colour)
    return words


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(a: Appearance, view: str, rng: np.random.Generator, style: str) -> str:
    """One templated English description; ``style`` is ``cuhk`` (short, casual) or ``icfg`` (long, listed)."""

    def choice(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    subject_noun = (
        ("girl" if a.age < 18 else "woman" if a.age < 60 else "old woman")
        if a.female
        else ("boy" if a.age < 18 else "man" if a.age < 60 else "old man")
    )
    pron, poss = ("she", "her") if a.female else ("he", "his")
    upper = f"{a.upper_colour} {choice(_UPPER_NOUNS[a.upper])}"
    if a.upper_pattern != "plain":
        upper += " " + choice(_PATTERN_PHRASES[a.upper_pattern]).format(c=a.pattern_colour)
    lower = None if a.lower == "none" else f"{a.lower_colour} {choice(_LOWER_NOUNS[a.lower])}"
    shoes = f"{a.shoe_colour} {choice(_SHOE_NOUNS[a.shoes])}"
    hair = {"bald": "no hair", "short": f"short {a.hair_colour} hair", "long": f"long {a.hair_colour} hair"}[
        a.hair_style
    ]
    extras = []
    if a.coat:
        extras.append(f"{_article(a.coat_colour)} {a.coat_colour} {choice(['coat', 'long coat', 'jacket'])}")
    if a.hat:
        extras.append(f"{_article(a.hat_colour)} {a.hat_colour} {choice(['hat', 'cap'])}")
    if a.glasses:
        extras.append(choice(["sunglasses", "dark glasses"]))
    if a.scarf:
        extras.append(f"{_article(a.scarf_colour)} {a.scarf_colour} scarf")
    bag = None if a.bag == "none" else f"{_article(a.bag_colour)} {a.bag_colour} {choice(_BAG_NOUNS[a.bag])}"
    wear = [f"{_article(upper)} {upper}"] + ([lower] if lower else []) + [shoes]

    if style == "cuhk":
        opener = choice(
            [
                f"The {subject_noun} is wearing",
                f"A {subject_noun} wearing",
                f"This {subject_noun} wears",
                "The pedestrian is wearing",
            ]
        )
        text = f"{opener} {', '.join(wear[:-1])} and {wear[-1]}."
        if extras:
            text += (
                f" {pron.capitalize()} {choice(['also has', 'has on', 'is wearing'])} {' and '.join(extras)}."
            )
        text += f" {pron.capitalize()} has {hair}."
        if bag:
            text += f" {pron.capitalize()} {choice(['is carrying', 'carries', 'has'])} {bag}."
        if a.hold_front:
            text += f" {pron.capitalize()} holds something in front of {poss} body."
        if view == "back" and rng.random() < 0.5:
            text += f" {pron.capitalize()} is walking away from the camera."
        return text
    opener = choice(
        [
            f"A {'young ' if a.age < 30 else ''}{subject_noun} with {hair},",
            f"The {subject_noun} has {hair} and is",
            f"This person with {hair} is",
        ]
    )
    items = wear + extras
    text = f"{opener} {choice(['wearing', 'dressed in'])} {', '.join(items[:-1])} and {items[-1]}"
    if bag:
        text += f", {choice(['carrying', 'with'])} {bag}"
        text += " on the back" if a.bag == "backpack" else " over the shoulder" if a.bag == "shoulder" else ""
    text += "."
    if a.hold_front:
        text += f" {pron.capitalize()} is holding an object in {poss} hands."
    return text
