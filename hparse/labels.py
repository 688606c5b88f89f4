"""The data contract: one metadata table per dataset label set.

A :class:`DatasetMeta` says everything the rest of hparse needs to know about a label
set: class names, palette, ignore index, left/right label pairs, joints and their flip
pairs, and the part -> upper/lower -> full-body hierarchy. Readers, transforms,
evaluators, models and visualisation all take their label knowledge from here, so a
flip always swaps what the table says and a hierarchy is never re-typed in a model.

Add a dataset by calling :func:`register_meta` with a new table (see the bottom of
this file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255

# Hierarchy level-2 node ids (level 3 is 0 background / 1 person).
BACKGROUND, UPPER, LOWER = 0, 1, 2

# The LIP/CIHP colour map (JPPNet, PGN, Graphonomy, mmseg LIPDataset).
LIP_PALETTE = [
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255),
    (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
]


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-shift palette (also SCHP's ``get_palette``)."""
    out = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


PALETTES = {"lip": LIP_PALETTE, "voc": voc_palette()}

# Classes that touch on a body, per label set (by name; background touches everything): the default
# palettes below keep them far apart. Made by ``python -m hparse.viz.palette_design NAME``, which also
# says their smallest CIEDE2000 distances; tests/test_palettes.py holds them to it.
_LIP_TOUCHING = {
    "hat": ("hair", "sunglasses", "face", "scarf", "coat", "upper-clothes"),
    "hair": ("sunglasses", "face", "upper-clothes", "dress", "coat", "scarf", "left-arm", "right-arm"),
    "glove": ("coat", "upper-clothes", "dress", "pants", "skirt", "left-arm", "right-arm"),
    "sunglasses": ("face",),
    "upper-clothes": ("coat", "dress", "pants", "skirt", "scarf", "face", "left-arm", "right-arm"),
    "dress": ("coat", "scarf", "face", "left-arm", "right-arm", "left-leg", "right-leg", "socks"),
    "coat": ("pants", "skirt", "scarf", "face", "left-arm", "right-arm", "left-leg", "right-leg"),
    "socks": ("pants", "skirt", "left-leg", "right-leg", "left-shoe", "right-shoe"),
    "pants": ("left-leg", "right-leg", "left-shoe", "right-shoe", "left-arm", "right-arm"),
    "scarf": ("face",),
    "skirt": ("left-leg", "right-leg", "left-arm", "right-arm"),
    "face": ("left-arm", "right-arm"),
    "left-arm": ("right-arm",),
    "left-leg": ("right-leg", "left-shoe", "right-shoe"),
    "right-leg": ("left-shoe", "right-shoe"),
    "left-shoe": ("right-shoe",),
}
TOUCHING: dict[str, dict[str, tuple[str, ...]]] = {
    "lip": {**_LIP_TOUCHING, "jumpsuits": ("hair", "face", "scarf", "coat", "glove", "socks", "left-arm",
                                           "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe")},
    "cihp": {**_LIP_TOUCHING, "torso-skin": ("hair", "face", "scarf", "upper-clothes", "coat", "dress", "pants",
                                             "skirt", "left-arm", "right-arm")},
    "atr": {
        "hat": ("hair", "sunglasses", "face", "scarf", "upper-clothes"),
        "hair": ("sunglasses", "face", "upper-clothes", "dress", "scarf", "left-arm", "right-arm", "bag"),
        "sunglasses": ("face",),
        "upper-clothes": ("skirt", "pants", "dress", "belt", "face", "left-arm", "right-arm", "bag", "scarf"),
        "skirt": ("belt", "left-leg", "right-leg", "left-arm", "right-arm", "bag"),
        "pants": ("belt", "left-shoe", "right-shoe", "left-leg", "right-leg", "left-arm", "right-arm", "bag"),
        "dress": ("belt", "face", "left-leg", "right-leg", "left-arm", "right-arm", "bag", "scarf"),
        "belt": ("left-arm", "right-arm", "bag"),
        "left-shoe": ("right-shoe", "left-leg", "right-leg"),
        "right-shoe": ("left-leg", "right-leg"),
        "face": ("scarf", "left-arm", "right-arm"),
        "left-leg": ("right-leg", "bag"),
        "left-arm": ("right-arm", "bag"),
        "right-arm": ("bag",),
        "bag": ("scarf",),
    },
    "pascal_person_part": {
        "head": ("torso", "lower-arm"),
        "torso": ("upper-arm", "lower-arm", "upper-leg"),
        "upper-arm": ("lower-arm",),
        "lower-arm": ("upper-leg",),
        "upper-leg": ("lower-leg",),
    },
    "ppss": {
        "hair": ("face", "upper-clothes", "arms"),
        "face": ("upper-clothes", "arms"),
        "upper-clothes": ("arms", "lower-clothes"),
        "arms": ("lower-clothes",),
        "lower-clothes": ("legs", "shoes"),
        "legs": ("shoes",),
    },
    "ccp15": {
        "hat": ("hair", "sunglasses", "skin", "coat", "upper-clothes", "scarf"),
        "hair": ("sunglasses", "skin", "upper-clothes", "coat", "dress", "scarf", "bag", "accessories"),
        "sunglasses": ("skin",),
        "upper-clothes": ("coat", "dress", "skirt", "pants", "scarf", "skin", "bag", "accessories"),
        "coat": ("dress", "skirt", "pants", "scarf", "skin", "bag", "accessories"),
        "dress": ("skin", "bag", "accessories", "scarf", "socks"),
        "skirt": ("skin", "socks", "bag", "accessories"),
        "pants": ("shoes", "socks", "skin", "bag", "accessories"),
        "socks": ("shoes", "skin"),
        "shoes": ("skin",),
        "bag": ("skin", "scarf", "accessories"),
        "scarf": ("skin", "accessories"),
        "skin": ("accessories",),
    },
}
TOUCHING["vip"] = TOUCHING["cihp"]

# CIEDE2000 minimum over touching pairs / over all pairs in the comments (palette_design prints them)
DISTINCT_PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "lip": (  # touching >= 30.4, any pair >= 18.8
        (0, 0, 0), (17, 136, 153), (0, 238, 187), (221, 204, 0), (255, 0, 85), (34, 136, 0), (187, 51, 0),
        (255, 0, 238), (187, 0, 136), (119, 85, 0), (0, 170, 255), (102, 85, 119), (85, 221, 238), (255, 204, 153),
        (17, 68, 204), (221, 204, 238), (0, 238, 0), (255, 170, 170), (0, 102, 68), (153, 153, 136),
    ),
    "cihp": (  # touching >= 31.7, any pair >= 20.2
        (0, 0, 0), (17, 187, 17), (255, 34, 17), (170, 0, 34), (153, 119, 255), (0, 170, 238), (0, 119, 0),
        (255, 17, 187), (153, 17, 136), (204, 119, 0), (68, 238, 187), (102, 102, 119), (119, 102, 0),
        (255, 204, 153), (17, 68, 204), (221, 204, 255), (0, 221, 238), (0, 102, 119), (204, 221, 0), (255, 153, 170),
    ),
    "atr": (  # touching >= 33.3, any pair >= 20.9
        (0, 0, 0), (0, 221, 238), (170, 0, 17), (0, 153, 0), (238, 17, 204), (255, 85, 0), (153, 85, 0),
        (0, 170, 255), (221, 204, 221), (136, 136, 255), (255, 153, 153), (255, 204, 153), (153, 51, 102),
        (153, 187, 153), (0, 102, 68), (68, 85, 153), (119, 238, 0), (102, 102, 0),
    ),
    "pascal_person_part": (  # touching >= 46.3, any pair >= 29.3
        (0, 0, 0), (0, 204, 255), (0, 238, 85), (221, 51, 0), (255, 187, 255), (238, 153, 17), (102, 119, 255),
    ),
    "ppss": (  # touching >= 45.3, any pair >= 29.3
        (0, 0, 0), (17, 136, 0), (255, 204, 153), (238, 0, 136), (0, 153, 204), (119, 238, 0), (221, 85, 0),
        (187, 153, 255),
    ),
    "ccp15": (  # touching >= 33.7, any pair >= 20.8
        (0, 0, 0), (153, 68, 0), (0, 102, 0), (153, 119, 255), (238, 0, 170), (17, 187, 238), (17, 85, 187),
        (102, 119, 102), (119, 102, 0), (119, 238, 0), (136, 0, 204), (255, 0, 0), (221, 204, 255), (255, 204, 153),
        (68, 238, 187),
    ),
}
DISTINCT_PALETTES["vip"] = DISTINCT_PALETTES["cihp"]


@dataclass(frozen=True)
class DatasetMeta:
    """Metadata of one label set.

    ``hierarchy`` maps every foreground class id to its level-2 parent (``UPPER`` or
    ``LOWER``); background maps to ``BACKGROUND``; level 3 is background/person.
    """

    name: str
    classes: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    hierarchy: dict[int, int] = field(default_factory=dict)
    palette_name: str = "voc"
    joints: tuple[str, ...] = ()
    joint_flip_pairs: tuple[tuple[int, int], ...] = ()
    ignore_index: int = IGNORE_INDEX
    description: str = ""
    hierarchy_note: str = ""

    def __post_init__(self):
        n = self.num_classes
        for a, b in self.flip_pairs:
            if not (0 < a < n and 0 < b < n) or a == b:
                raise ValueError(f"{self.name}: bad flip pair ({a}, {b})")
        if self.hierarchy:
            missing = set(range(n)) - set(self.hierarchy)
            if missing:
                raise ValueError(f"{self.name}: hierarchy misses classes {sorted(missing)}")
            if self.hierarchy[0] != BACKGROUND or any(
                self.hierarchy[c] not in (UPPER, LOWER) for c in range(1, n)
            ):
                raise ValueError(f"{self.name}: background must map to 0 and parts to upper/lower")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def palette(self, name: str | None = None) -> np.ndarray:
        """(256, 3) uint8 colour table for viewing. ``name``: 'lip' or 'voc' (:data:`PALETTES`); default: the
        label set's distinct palette (:data:`DISTINCT_PALETTES`), else its ``palette_name`` table."""
        pal = DISTINCT_PALETTES[self.name] if name is None and self.name in DISTINCT_PALETTES \
            else PALETTES[name or self.palette_name]
        out = np.array(PALETTES["voc"], dtype=np.uint8)
        out[: len(pal)] = np.array(pal, dtype=np.uint8)
        return out

    def touching_pairs(self) -> list[tuple[int, int]]:
        """``(a, b)`` class ids (a < b) of parts that touch on a body (:data:`TOUCHING`; palette design)."""
        ids = {c: i for i, c in enumerate(self.classes)}
        near = TOUCHING.get(self.name, {})
        return sorted({tuple(sorted((ids[a], ids[b]))) for a, bs in near.items() for b in bs})

    def flip_lut(self) -> np.ndarray:
        """256-entry lookup table that swaps left/right labels (255 stays 255)."""
        return swap_lut(self.flip_pairs)

    def flip_permutation(self) -> list[int]:
        """Channel order that swaps left/right classes of a (C, H, W) score map."""
        return self.flip_lut()[: self.num_classes].tolist()

    def joint_flip_permutation(self) -> list[int]:
        perm = list(range(self.num_joints))
        for a, b in self.joint_flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def hierarchy_lut(self, level: int) -> np.ndarray:
        """LUT from part labels to level ``level`` labels (1 = parts, 2 = upper/lower, 3 = person)."""
        lut = np.full(256, self.ignore_index, dtype=np.uint8)
        if level == 1:
            lut[: self.num_classes] = np.arange(self.num_classes)
            return lut
        if not self.hierarchy:
            raise ValueError(f"{self.name} has no hierarchy")
        for c, parent in self.hierarchy.items():
            lut[c] = parent if level == 2 else int(parent != BACKGROUND)
        if level not in (2, 3):
            raise ValueError(f"hierarchy level must be 1, 2 or 3, not {level}")
        return lut

    def level_classes(self, level: int) -> tuple[str, ...]:
        return {1: self.classes, 2: ("background", "upper-body", "lower-body"),
                3: ("background", "person")}[level]

    def children(self, parent: int) -> list[int]:
        """Part ids under a level-2 node."""
        return [c for c, p in sorted(self.hierarchy.items()) if p == parent and c != 0]


def swap_lut(pairs) -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    for a, b in pairs:
        lut[a], lut[b] = b, a
    return lut


def _hier(n: int, lower: set[int], upper: set[int] | None = None) -> dict[int, int]:
    upper = set(range(1, n)) - lower if upper is None else upper
    if upper & lower or (upper | lower) != set(range(1, n)):
        raise ValueError("hierarchy: every part must be in exactly one of upper/lower")
    return {0: BACKGROUND, **{c: (LOWER if c in lower else UPPER) for c in range(1, n)}}


_META: dict[str, DatasetMeta] = {}


def register_meta(meta: DatasetMeta) -> DatasetMeta:
    if meta.name in _META:
        raise ValueError(f"dataset meta {meta.name!r} already registered")
    _META[meta.name] = meta
    return meta


def get_meta(name: str | DatasetMeta) -> DatasetMeta:
    if isinstance(name, DatasetMeta):
        return name
    try:
        return _META[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(sorted(_META))}") from None


def meta_of_data(data_cfg: dict) -> DatasetMeta:
    """The label set of a config's ``data`` section: ``label_set``, else the layout's own."""
    return get_meta(data_cfg["label_set"] or data_cfg["layout"])


def list_metas() -> list[str]:
    return sorted(_META)


# ---------------------------------------------------------------------------------------
# The tables. Sources: reference-notes C.1-C.9 and A.4; shared/data/README.md for ccp15.

LIP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg",
    "right-leg", "left-shoe", "right-shoe",
)
LIP_FLIP = ((14, 15), (16, 17), (18, 19))
LIP_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "spine", "neck",
    "head", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
LIP_JOINT_FLIP = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
LIP_LOWER = {8, 9, 10, 12, 16, 17, 18, 19}

register_meta(DatasetMeta(
    "lip", LIP_CLASSES, LIP_FLIP, _hier(20, LIP_LOWER), "lip", LIP_JOINTS, LIP_JOINT_FLIP,
    description="Look Into Person: single person, 20 classes (10 = jumpsuits), 16 joints",
))

CIHP_CLASSES = LIP_CLASSES[:10] + ("torso-skin",) + LIP_CLASSES[11:]
# Torso-skin belongs to the upper body (the public HHP code wrongly reuses LIP's table).
CIHP_LOWER = LIP_LOWER - {10}
register_meta(DatasetMeta(
    "cihp", CIHP_CLASSES, LIP_FLIP, _hier(20, CIHP_LOWER), "lip",
    description="Crowd Instance-level Human Parsing: 20 classes (10 = torso-skin)",
))
register_meta(DatasetMeta(
    "vip", CIHP_CLASSES, LIP_FLIP, _hier(20, CIHP_LOWER), "lip",
    description="Video Instance-level Parsing: the CIHP classes, per-video folders",
))

ATR_CLASSES = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants", "dress", "belt",
    "left-shoe", "right-shoe", "face", "left-leg", "right-leg", "left-arm", "right-arm", "bag",
    "scarf",
)
register_meta(DatasetMeta(
    "atr", ATR_CLASSES, ((9, 10), (12, 13), (14, 15)),
    _hier(18, {5, 6, 7, 8, 9, 10, 12, 13}), "voc",
    description="ATR: 18 classes (HHP's validation hierarchy; its training branch is buggy)",
))

register_meta(DatasetMeta(
    "pascal_person_part",
    ("background", "head", "torso", "upper-arm", "lower-arm", "upper-leg", "lower-leg"),
    (), _hier(7, {5, 6}), "voc",
    description="PASCAL-Person-Part: 7 classes, no left/right classes",
))

register_meta(DatasetMeta(
    "ppss",
    ("background", "hair", "face", "upper-clothes", "arms", "lower-clothes", "legs", "shoes"),
    (), _hier(8, {5, 6, 7}), "voc",
    description="PPSS: 8 classes; label PNGs store grey values remapped by the reader",
))

MHP2_CLASSES = (
    "background", "cap/hat", "helmet", "face", "hair", "left-arm", "right-arm", "left-hand",
    "right-hand", "protector", "bikini/bra", "jacket/windbreaker/hoodie", "t-shirt", "polo-shirt",
    "sweater", "singlet", "torso-skin", "pants", "shorts/swim-shorts", "skirt", "stockings",
    "socks", "left-boot", "right-boot", "left-shoe", "right-shoe", "left-highheel",
    "right-highheel", "left-sandal", "right-sandal", "left-leg", "right-leg", "left-foot",
    "right-foot", "coat", "dress", "robe", "jumpsuit", "other-full-body-clothes", "headwear",
    "backpack", "ball", "bats", "belt", "bottle", "carrybag", "cases", "sunglasses", "eyewear",
    "glove", "scarf", "umbrella", "wallet/purse", "watch", "wristband", "tie", "other-accessary",
    "other-upper-body-clothes", "other-lower-body-clothes",
)
register_meta(DatasetMeta(
    "mhp_v2", MHP2_CLASSES,
    ((5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33)),
    _hier(59, set(range(17, 34)) | {58}), "voc",
    description="LV-MHP-v2: 58 parts + background, per-person annotation PNGs",
    hierarchy_note="hierarchy is hparse's convention: legs, feet, footwear, lower clothes -> lower",
))

CCP_CLASSES = (
    "null", "accessories", "bag", "belt", "blazer", "blouse", "bodysuit", "boots", "bra",
    "bracelet", "cape", "cardigan", "clogs", "coat", "dress", "earrings", "flats", "glasses",
    "gloves", "hair", "hat", "heels", "hoodie", "intimate", "jacket", "jeans", "jumper",
    "leggings", "loafers", "necklace", "panties", "pants", "pumps", "purse", "ring", "romper",
    "sandals", "scarf", "shirt", "shoes", "shorts", "skin", "skirt", "sneakers", "socks",
    "stockings", "suit", "sunglasses", "sweater", "sweatshirt", "swimwear", "t-shirt", "tie",
    "tights", "top", "vest", "wallet", "watch", "wedges",
)
CCP15_CLASSES = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "coat", "dress", "skirt", "pants",
    "socks", "shoes", "bag", "scarf", "skin", "accessories",
)
# ccp15 id -> the raw CCP tags it merges (shared/data/README.md, exactly).
CCP15_TAGS = {
    0: ("null",), 1: ("hat",), 2: ("hair",), 3: ("glasses", "sunglasses"),
    4: ("blouse", "bodysuit", "bra", "cardigan", "hoodie", "intimate", "jumper", "shirt", "sweater",
        "sweatshirt", "swimwear", "t-shirt", "top", "vest"),
    5: ("blazer", "cape", "coat", "jacket", "suit"), 6: ("dress", "romper"), 7: ("skirt",),
    8: ("jeans", "leggings", "panties", "pants", "shorts"), 9: ("socks", "stockings", "tights"),
    10: ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes", "sneakers",
         "wedges"),
    11: ("bag", "purse", "wallet"), 12: ("scarf",), 13: ("skin",),
    14: ("accessories", "belt", "bracelet", "earrings", "gloves", "necklace", "ring", "tie",
         "watch"),
}
CCP15_LOWER = {7, 8, 9, 10}
CCP_TO_CCP15 = {CCP_CLASSES.index(t): k for k, tags in CCP15_TAGS.items() for t in tags}

register_meta(DatasetMeta(
    "ccp15", CCP15_CLASSES, (), _hier(15, CCP15_LOWER), "voc",
    description="Clothing Co-Parsing merged to 15 classes (hparse's standard CCP label set)",
    hierarchy_note="skin and dress straddle both halves; upper-body is the project's convention",
))
register_meta(DatasetMeta(
    "ccp", CCP_CLASSES, (),
    _hier(59, {c for c, k in CCP_TO_CCP15.items() if k in CCP15_LOWER}), "voc",
    description="Clothing Co-Parsing raw tags (59 labels, 0 = null)",
    hierarchy_note="inherited from ccp15 through the merge table",
))
