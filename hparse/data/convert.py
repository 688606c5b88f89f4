"""Label-set converters: lookup tables that map one label set's ids onto another's.

Every converter is a 256-entry uint8 LUT; 255 (ignore) always stays 255 and ids with no
counterpart in the target set map to 255 so they are neither rewarded nor punished.
Add one with :func:`register_converter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import CCP_TO_CCP15, IGNORE_INDEX, get_meta


@dataclass(frozen=True)
class LabelConverter:
    source: str
    target: str
    mapping: dict[int, int]
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    def lut(self) -> np.ndarray:
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for s, t in self.mapping.items():
            lut[s] = t
        return lut

    def __call__(self, label: np.ndarray) -> np.ndarray:
        """Map a label map (any integer array with values < 256)."""
        label = np.asarray(label)
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"{self.name}: label values must lie in 0..255")
        return self.lut()[label.astype(np.uint8)]

    def score_matrix(self) -> np.ndarray:
        """(C_src, C_tgt) 0/1 matrix to sum a model's class probabilities into the target set."""
        src, tgt = get_meta(self.source).num_classes, get_meta(self.target).num_classes
        m = np.zeros((src, tgt), dtype=np.float32)
        for s, t in self.mapping.items():
            if t != IGNORE_INDEX:
                m[s, t] = 1.0
        return m


_CONVERTERS: dict[tuple[str, str], LabelConverter] = {}


def register_converter(conv: LabelConverter) -> LabelConverter:
    src, tgt = get_meta(conv.source), get_meta(conv.target)
    for s, t in conv.mapping.items():
        if not 0 <= s < src.num_classes or not (0 <= t < tgt.num_classes or t == IGNORE_INDEX):
            raise ValueError(f"{conv.name}: bad pair {s}->{t}")
    _CONVERTERS[(conv.source, conv.target)] = conv
    return conv


def get_converter(source: str, target: str) -> LabelConverter:
    try:
        return _CONVERTERS[(source, target)]
    except KeyError:
        known = ", ".join(c.name for c in _CONVERTERS.values())
        raise KeyError(f"no label converter {source}->{target}; known: {known}") from None


def list_converters() -> list[LabelConverter]:
    return list(_CONVERTERS.values())


register_converter(LabelConverter(
    "ccp", "ccp15", CCP_TO_CCP15, "shared/data/README.md: CCP's 59 tags merged to 15 classes"))

# MMAN's LIP -> PPSS merge (reference-notes C.6, MMAN util/util.py).
_LIP_PPSS_GROUPS = {0: (0,), 1: (1, 2), 2: (4, 13), 3: (5, 6, 7, 10, 11), 4: (3, 14, 15),
                    5: (9, 12), 6: (16, 17), 7: (8, 18, 19)}
register_converter(LabelConverter(
    "lip", "ppss", {s: t for t, ss in _LIP_PPSS_GROUPS.items() for s in ss},
    "MMAN's cross-dataset merge (Table 3 of the MMAN paper)"))

# ATR and LIP name mostly the same parts in a different order; belt and bag have no LIP
# counterpart and are ignored.
_ATR_TO_LIP = {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 12, 6: 9, 7: 6, 8: IGNORE_INDEX, 9: 18, 10: 19,
               11: 13, 12: 16, 13: 17, 14: 14, 15: 15, 16: IGNORE_INDEX, 17: 11}
register_converter(LabelConverter("atr", "lip", _ATR_TO_LIP, "by class name; belt, bag ignored"))
register_converter(LabelConverter(
    "cihp", "vip", {c: c for c in range(20)}, "VIP uses the CIHP classes"))
