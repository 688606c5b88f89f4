"""Runners: what executes a semantic model's network for :class:`hparse.engine.inference.Predictor`.

A runner maps the padded 0..255 batch ``(B, 3, H, W)`` to ``(part logits, {extra name: raw tensor})``; the
predictor keeps the one test-time geometry (resizing, padding, flip, scales, upsampling) around it.

- ``torch``: the model itself (:class:`TorchRunner`).
- ``onnxruntime``: the network exported to ONNX once (:mod:`hparse.engine.export`) and cached, keyed by a hash
  of the weights, the model config and the model code, in ``$HPARSE_CACHE`` or ``~/.cache/hparse``
  (written atomically), run by an ONNX Runtime ``InferenceSession`` on the CPU with ``torch.get_num_threads()``
  threads (all cores unless set) (:class:`OnnxRuntimeRunner`). ``pip install "hparse[onnx]"``.
- ``onnxruntime-int8``: the same network quantised to int8 (static, per-channel QDQ). Shipped models may come with
  a calibrated int8 network in ``hparse/weights`` (``int8-<weights key>.onnx``, :func:`shipped_int8`: found by a
  hash of the weights, made by ``scripts/ship_int8.py``, which refuses one whose labels agree with float32 on less
  than :data:`MIN_INT8_AGREEMENT` of the pixels of a check set); for any other model ``Parser.use_int8`` calibrates
  one on the caller's images under the same rule (:func:`int8_runner`).

``backend=None`` picks the fastest installed: on the CPU with onnxruntime installed, ``onnxruntime-int8`` when a
shipped int8 network matches the weights, else ``onnxruntime``; otherwise ``torch``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import HParseError
from .checkpoint import WEIGHTS_DIR
from .export import ONNX_OPSET, check_exportable, export_onnx

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
MIN_INT8_AGREEMENT = 0.99
MAX_CACHED = 24  # exported networks kept in the cache
CALIBRATION_SCALES = (0.75, 1.0, 1.25)
EXPORT_REVISION = 1  # bump when the export itself changes (invalidates cached networks)


class TorchRunner:
    """The PyTorch model (channels-last on request: about 1.4x faster convolutions on a CPU)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, channels_last: bool = False):
        self.model, self.channels_last = model, channels_last

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        res = self.model({"image": x})
        return res.logits, res.extras


class OnnxRuntimeRunner:
    """An ONNX file exported by :func:`hparse.engine.export.export_onnx`, run by ONNX Runtime on the CPU."""

    def __init__(self, path: str | Path, threads: int | None = None, name: str = "onnxruntime"):
        self.path, self.name = Path(path), name
        self.session = onnx_session(path, threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = dict(zip(self.output_names, self.session.run(None, {"image": image})))
        return torch.from_numpy(outs.pop("parsing")), {k: torch.from_numpy(v) for k, v in outs.items()}


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for an ONNX file, ``threads`` (default: PyTorch's) that sleep when idle."""
    ort = _import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads sleep instead of spinning: they would take the cores from the upsampling that follows
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise HParseError("the onnxruntime backend needs onnxruntime: pip install 'hparse[onnx]'") from None
    return onnxruntime


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def resolve_backend(backend: str | None, model: torch.nn.Module, device) -> str:
    """``backend`` checked against the model and device; ``None`` -> the fastest installed."""
    on_cpu = torch.device(device).type == "cpu"
    semantic = getattr(model, "task", "semantic") == "semantic"
    if backend is None:
        if not (on_cpu and semantic and onnxruntime_available()):
            return "torch"
        return "onnxruntime-int8" if shipped_int8(model) is not None else "onnxruntime"
    if backend not in BACKENDS:
        raise HParseError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)} (or None: the fastest "
                          "installed)")
    if backend == "onnxruntime-int8" and semantic and shipped_int8(model) is None:
        raise HParseError("no calibrated int8 network ships for these weights: use backend onnxruntime, or calibrate "
                          "one with Parser.use_int8(images)")
    if backend.startswith("onnxruntime"):
        if not on_cpu:
            raise HParseError(f"the onnxruntime backend runs on the CPU, not {device}; use device cpu or backend torch")
        if not semantic:
            raise HParseError(f"the onnxruntime backend runs semantic models; {type(model).__name__} is an instance "
                              "model: use backend torch")
        check_exportable(model)
        _import_onnxruntime()
    return backend


def make_runner(model: torch.nn.Module, backend: str, model_cfg: dict | None = None, channels_last: bool = False):
    """The runner of a resolved ``backend`` (see :func:`resolve_backend`)."""
    if backend == "torch":
        return TorchRunner(model, channels_last)
    if backend == "onnxruntime-int8":
        return OnnxRuntimeRunner(shipped_int8(model), name=backend)
    return OnnxRuntimeRunner(cached_onnx(model, model_cfg))


# -- the cache of exported networks -----------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("HPARSE_CACHE") or Path.home() / ".cache" / "hparse")


def _models_source_digest() -> str:
    """A hash of the model code (an edited model invalidates cached exports)."""
    root = Path(__file__).resolve().parent.parent / "models"
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def hash_weights(h, model: torch.nn.Module) -> None:
    """Feed a model's parameters and buffers (names, dtypes, shapes, bytes) into the hash ``h``."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def weights_key(model: torch.nn.Module) -> str:
    """Hash of a model's class, label set, weights and buffers (what names a shipped int8 network)."""
    h = hashlib.sha256(f"{type(model).__name__}:{model.meta.name}".encode())
    hash_weights(h, model)
    return h.hexdigest()[:32]


def shipped_int8(model: torch.nn.Module) -> Path | None:
    """The calibrated int8 network shipped for these weights, if any."""
    path = WEIGHTS_DIR / f"int8-{weights_key(model)}.onnx"
    return path if path.is_file() else None


def network_key(model: torch.nn.Module, model_cfg: dict | None = None) -> str:
    """Hash of everything an export depends on: weights and buffers, model config, model code, exporter."""
    h = hashlib.sha256()
    header = {"revision": EXPORT_REVISION, "opset": ONNX_OPSET, "torch": torch.__version__,
              "code": _models_source_digest(), "model": type(model).__name__, "repr": repr(model),
              "config": model_cfg, "label_set": model.meta.name}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    hash_weights(h, model)
    return h.hexdigest()[:32]


def cached_onnx(model: torch.nn.Module, model_cfg: dict | None = None) -> Path:
    """The model's network as ONNX in the cache, exported (atomically) on first use."""
    path = cache_dir() / f"{type(model).__name__.lower()}-{network_key(model, model_cfg)}.onnx"
    if not path.is_file():
        export_onnx(model, path)
        prune_cache()
    return path


def prune_cache(keep: int = MAX_CACHED) -> None:
    """Delete all but the ``keep`` most recently written networks (a cache, not an archive)."""
    files = sorted(cache_dir().glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        f.unlink(missing_ok=True)


# -- int8 ------------------------------------------------------------------------------------------------------
#: convolutions (in topological order, from the input) that int8 networks keep in float32
FLOAT_CONVS = 3


def quantize_int8(fp32_path: str | Path, out: str | Path, calibration: list[torch.Tensor]) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, min-max activation ranges) of an exported network,
    calibrated on padded 0..255 input batches (what the predictor feeds), written atomically. The first
    :data:`FLOAT_CONVS` convolutions, which read the image at the finest scales, stay float32: quantising the
    first alone cost the ``robust`` model a point of label agreement with float32 on CCP val (98.36 % -> 99.27 %
    without it); the EfficientNet-Lite0 default keeps its stem block too (the example photos: 98.9 % with one
    float convolution, 99.1 % with three; the heads do not matter)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..io.atomic import atomic_path

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"image": x.to("cpu", torch.float32).contiguous().numpy()}

    with tempfile.TemporaryDirectory(prefix="hparse-int8-") as tmp_dir, atomic_path(out) as tmp:
        prepared = Path(tmp_dir) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]  # topological order
        quantize_static(str(prepared), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=convs[:FLOAT_CONVS])
    return Path(out)


def int8_runner(model: torch.nn.Module, model_cfg: dict | None, resizer, images: list[np.ndarray]):
    """An :class:`OnnxRuntimeRunner` (named ``onnxruntime-int8``) of the network quantised with ``images`` as
    calibration data: each resized and padded by ``resizer`` at :data:`CALIBRATION_SCALES`, and mirrored (the
    inputs TTA gives; for the default model, calibrating at scale 1 alone left 97.3 % label agreement with
    float32 under TTA, these 99.6 %).
    Cached like the float32 network."""
    _import_onnxruntime()
    batches = []
    for im in images:
        for scale in CALIBRATION_SCALES:
            x = resizer.batch([im], scale)[0]
            batches += [x, x.flip(-1)]
    h = hashlib.sha256(network_key(model, model_cfg).encode())
    h.update(inspect.getsource(quantize_int8).encode())     # another quantisation recipe: another network
    h.update(str(FLOAT_CONVS).encode())
    for x in batches:
        h.update(x.to("cpu", torch.float32).contiguous().numpy().tobytes())
    path = cache_dir() / f"{type(model).__name__.lower()}-int8-{h.hexdigest()[:32]}.onnx"
    if not path.is_file():
        quantize_int8(cached_onnx(model, model_cfg), path, batches)
        prune_cache()
    return OnnxRuntimeRunner(path, name="onnxruntime-int8")


def label_agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Share of pixels with the same label over lists of label maps."""
    same = sum(int((x == y).sum()) for x, y in zip(a, b))
    return same / max(1, sum(x.size for x in a))
