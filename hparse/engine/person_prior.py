"""A second opinion on where the people are, for parsers trained on one person per photo.

``selfie``: MediaPipe's selfie segmenter (the landscape model, 144 x 256 input, 0.25 M parameters; Apache-2.0,
bundled with the ``mediapipe`` 0.10.21 wheel and shipped in ``hparse/weights`` with its licence) gives P(person)
for the whole photo, stretched to its input as MediaPipe does. It is averaged with the parser's own
P(person) = 1 - P(background) on the parser's output grid; the class probabilities become
P(background) = 1 - f and P(part k) = f * p_k / (1 - p_0), and the labels are decided person first: background
where the averaged f is below 1/2, else the parser's most likely part (so the label can differ from the argmax of
the fused probabilities where no single part outweighs the background).
"""

from __future__ import annotations

import hashlib
import warnings
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import HParseError
from ..io import tflite
from ..io.atomic import atomic_path
from ..io.tflite import TFLiteGraph
from . import backends
from .checkpoint import WEIGHTS_DIR

PRIORS = ("selfie",)
SELFIE_WEIGHTS = WEIGHTS_DIR / "selfie_segmentation_landscape.tflite"
_EPS = 1e-6


@cache
def _selfie_graph(path: str) -> TFLiteGraph:
    return TFLiteGraph(path).eval()


@cache
def _selfie_session(path: str, cache: str):
    """An ONNX Runtime session of the graph exported to the ``cache`` folder (one per process and cache)."""
    return backends.onnx_session(_cached_onnx(_selfie_graph(path)))


def _cached_onnx(graph: TFLiteGraph) -> Path:
    """The graph exported to ONNX in hparse's cache (atomically, on first use), keyed by the file and the reader."""
    h = hashlib.sha256(graph.path.read_bytes())
    h.update(Path(tflite.__file__).read_bytes())
    path = backends.cache_dir() / f"tflite-{h.hexdigest()[:32]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, torch.zeros(graph.input_shape), str(tmp), input_names=["image"],
                              output_names=["person"], opset_version=17, dynamo=False)
    return path


class SelfiePrior:
    """MediaPipe's selfie segmenter as P(person), fused with a parser's probabilities (module docstring).
    ``onnxruntime``: run it with ONNX Runtime (exported once to hparse's cache) -- beside an ONNX Runtime parser,
    PyTorch's spinning threads would slow the parser's next call."""

    name = "selfie"

    def __init__(self, weights=SELFIE_WEIGHTS, onnxruntime: bool = False):
        if not weights.is_file():
            raise HParseError(f"the selfie segmenter's weights are missing from the installation ({weights})")
        graph = _selfie_graph(str(weights))
        _, self.height, self.width, _ = graph.input_shape
        self.net = graph
        if onnxruntime:
            session = _selfie_session(str(weights), str(backends.cache_dir()))
            self.net = lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

    def person(self, image: np.ndarray) -> torch.Tensor:
        """(height, width) P(person) of an HxWx3 uint8 RGB image, on the segmenter's grid (the whole image)."""
        x = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return self.net(torch.from_numpy(x.astype(np.float32) / 255.0)[None])[0, :, :, 0]

    def fuse(self, probs: torch.Tensor, person: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fused probabilities, person-first decision scores)``, both (C, h, w), from a parser's probabilities
        (C, h, w; class 0 the background) and the segmenter's P(person) on the same grid (h, w)."""
        f = (1 - probs[0] + person) / 2
        fused = torch.cat([(1 - f)[None], probs[1:] * (f / (1 - probs[0]).clamp_min(_EPS))[None]])
        return fused, person_first(fused)


def person_first(probs: torch.Tensor) -> torch.Tensor:
    """(C, ...) scores whose argmax is the person-first decision on probabilities (C, ...; class 0 the
    background): background where P(background) > 1/2, else the most likely part."""
    parts = probs[1:]
    return torch.cat([probs[:1], parts * ((1 - probs[0]) / parts.amax(0).clamp_min(_EPS))[None]])


def make_prior(name: str | None, onnxruntime: bool = False):
    """The prior named by a config's ``eval.person_prior`` (None: none), run by ONNX Runtime if ``onnxruntime``."""
    if name is None:
        return None
    if name not in PRIORS:
        raise HParseError(f"unknown person prior {name!r}; choose from {', '.join(PRIORS)} or none")
    return SelfiePrior(onnxruntime=onnxruntime)
