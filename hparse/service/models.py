"""The served models: each loaded once with :func:`hparse.api.load`, shared by every request; one predictor per
(model, TTA, long side) setting, all running the same network weights."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..api import Parser, load
from ..engine.inference import make_predictor
from .errors import ApiError

MAX_PREDICTORS = 16


@dataclass(frozen=True)
class Setting:
    """What decides how an image is run: requests with equal settings may share a forward pass."""

    model: str
    tta: bool
    long_side: int


class ModelPool:
    """Named parsers plus a small cache of predictors for non-default settings. Predictors are built and
    used in the inference thread only."""

    def __init__(self, sources: dict[str, str], device: str | None = "cpu"):
        self.parsers: dict[str, Parser] = {name: load(src, device=device) for name, src in sources.items()}
        self._predictors: OrderedDict[Setting, object] = OrderedDict()

    def parser(self, name: str) -> Parser:
        try:
            return self.parsers[name]
        except KeyError:
            raise ApiError(404, f"unknown model {name!r}; served here: {', '.join(self.parsers)}") from None

    def setting(self, name: str, tta: bool, long_side: int | None) -> Setting:
        parser = self.parser(name)
        return Setting(name, tta, long_side or parser.config["eval"]["long_side"])

    def predictor(self, s: Setting):
        """The predictor for a setting (the parser's own one for its defaults)."""
        parser = self.parsers[s.model]
        if not s.tta and s.long_side == parser.config["eval"]["long_side"]:
            return parser.predictor
        if s not in self._predictors:
            eval_cfg = {**parser.config["eval"], "long_side": s.long_side}
            self._predictors[s] = make_predictor(parser.model, eval_cfg, parser.device, tta=s.tta,
                                                 channels_last=str(parser.device) == "cpu")
            while len(self._predictors) > MAX_PREDICTORS:
                self._predictors.popitem(last=False)
        self._predictors.move_to_end(s)
        return self._predictors[s]

    def canvas_key(self, s: Setting, height: int, width: int) -> tuple:
        """The padded network input sizes of an image under ``s``, one per TTA scale: images with equal keys
        batch together without being padded more than when run alone (so batching never changes a label)."""
        cfg = self.parsers[s.model].config["eval"]
        scales = cfg["tta_scales"] if s.tta else cfg["scales"]
        divisor = self.parsers[s.model].predictor.resizer.size_divisor
        out = []
        for scale in scales:
            r = s.long_side * scale / max(height, width)
            h, w = max(1, round(height * r)), max(1, round(width * r))
            out.append((-(-h // divisor) * divisor, -(-w // divisor) * divisor))
        return tuple(out)

    def run(self, s: Setting, images: list[np.ndarray]) -> list[np.ndarray]:
        """Label maps (HxW uint8 class ids) of ``images`` under ``s``; instance models give their semantic map."""
        results = self.predictor(s).predict(images)
        return [r if isinstance(r, np.ndarray) else r.to_semantic() for r in results]

    def describe(self) -> list[dict]:
        """What ``GET /v1/models`` lists."""
        out = []
        for name, p in self.parsers.items():
            out.append({"name": name, "label_set": p.meta.name,
                        "classes": list(p.classes), "palette": p.meta.palette()[:len(p.classes)].tolist(),
                        "long_side": p.config["eval"]["long_side"],
                        "task": getattr(p.model, "task", "semantic"),
                        "architecture": p.config.get("model", {}).get("type")})
        return out
