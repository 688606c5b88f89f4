"""The served models: each loaded once with :func:`hparse.api.load`, shared by every request; one predictor per
(model, TTA, long side) setting, all running the same network weights."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..api import Parser, load
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

    def __init__(self, sources: dict[str, str], device: str | None = "cpu", backend: str | None = None):
        self.parsers: dict[str, Parser] = {name: load(src, device=device, backend=backend)
                                           for name, src in sources.items()}
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
        """The predictor for a setting (the parser's own one for its defaults), running the parser's network."""
        parser = self.parsers[s.model]
        if not s.tta and s.long_side == parser.config["eval"]["long_side"]:
            return parser.predictor
        if s not in self._predictors:
            eval_cfg = {**parser.config["eval"], "long_side": s.long_side}
            self._predictors[s] = parser.predictor_for(eval_cfg, tta=s.tta)
            while len(self._predictors) > MAX_PREDICTORS:
                self._predictors.popitem(last=False)
        self._predictors.move_to_end(s)
        return self._predictors[s]

    def run(self, s: Setting, images: list[np.ndarray]) -> list:
        """The predictor's results for ``images`` under ``s`` (label maps, or people), one forward pass per group of
        images with the same padded input size (so batching never pads an image more than running it alone would,
        and never changes a label). Rendering them (:func:`hparse.service.outputs.render`) happens in a worker,
        not in this single inference thread."""
        predictor = self.predictor(s)
        results: list = [None] * len(images)
        for group in _same_input_size(predictor, images):
            for i, result in zip(group, predictor.predict([images[i] for i in group])):
                results[i] = result
        return results

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


def _same_input_size(predictor, images: list[np.ndarray]) -> list[list[int]]:
    """Indices of ``images`` grouped by their padded network input sizes (one per TTA scale)."""
    resizer, groups = predictor.resizer, {}
    d = resizer.size_divisor
    for i, im in enumerate(images):
        sizes = (resizer.resized_size(im.shape, scale) for scale in getattr(predictor, "scales", (1.0,)))
        groups.setdefault(tuple((-(-h // d) * d, -(-w // d) * d) for h, w in sizes), []).append(i)
    return list(groups.values())
