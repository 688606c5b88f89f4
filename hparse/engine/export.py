"""A model's network for other runtimes: ONNX (dynamic batch, height and width) and TorchScript.

What is exported is :class:`ExportedNetwork`: input ``image``, float32 ``(B, 3, H, W)`` RGB in **0..255**
(the network normalises with the model's own ``pixel_mean`` / ``pixel_std`` inside, so users need not know
them); ``H`` and ``W`` any multiple of 32 (``hparse`` resizes the photo to the long side and pads it with the
mean pixel to a multiple of 32, see :mod:`hparse.engine.inference`). Outputs, by name: ``parsing`` (part
logits, ``(B, classes, h, w)`` at the model's output stride) followed by the model's ``extra_outputs`` it
produces (e.g. CE2P ``edge``; CNIF ``level2``, ``level3``, ``gates``). The ONNX file's metadata holds the label
set, the class names and this contract.

An instance model exports its dense network only: ``model.exported_outputs(model.network(...))`` names the tensors
(for a top-down model the FPN levels, then the detector head's raw outputs per level; whatever is derived from the
shapes alone, such as FCOS points and RPN anchors, is left out). The RoI heads, the detections and the paste stay in
PyTorch; the metadata's ``hparse.contract`` (the model's ``export_contract()``) says what each output holds.

ONNX files come from PyTorch's TorchScript-based exporter (``dynamo=False``: it needs only the ``onnx``
package and takes seconds) at opset :data:`ONNX_OPSET`. The models keep their sizes symbolic while traced
(``hparse.models.blocks.exporting``); tests/test_export.py compares exports with PyTorch at sizes other than
the traced one.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import HParseError
from ..io.atomic import atomic_path

ONNX_OPSET = 17
FORMATS = ("pt", "onnx", "torchscript")
TRACE_SIZE = (256, 192)  # the example input traced (any multiple of 32 works at run time)
INPUT_CONTRACT = "image: float32 (B, 3, H, W) RGB 0..255, H and W multiples of 32, normalised inside"


class ExportedNetwork(nn.Module):
    """``model.network(model.normalize(image))`` as a tuple in the order of :attr:`output_names` (an instance
    model's dense outputs as its ``exported_outputs`` names them)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_names = network_output_names(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = _named_outputs(self.model, self.model.network(self.model.normalize(image)))
        return tuple(out[k] for k in self.output_names)


def _semantic(model: nn.Module) -> bool:
    return getattr(model, "task", "semantic") == "semantic"


def _named_outputs(model: nn.Module, out: dict) -> dict[str, torch.Tensor]:
    """The raw outputs of ``model.network`` as named tensors: a semantic model's are already; an instance
    model names its dense outputs (``exported_outputs``)."""
    return out if _semantic(model) else model.exported_outputs(out)


def check_exportable(model: nn.Module) -> None:
    """An :class:`HParseError` for models whose network is not a fixed set of tensors."""
    if not _semantic(model) and not callable(getattr(model, "exported_outputs", None)):
        raise HParseError(f"{type(model).__name__} is an instance model without an exportable dense network (it "
                          "names no exported_outputs; its people are decoded in Python): use --format pt")
    bad = [type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if bad:
        raise HParseError(f"{type(model).__name__} keeps {bad[0]} in training mode at inference (batch statistics, "
                          "e.g. a keep_bn_training option): such a network cannot be exported")


@torch.no_grad()
def network_output_names(model: nn.Module) -> tuple[str, ...]:
    """``("parsing", *extras)``: the model's ``extra_outputs`` that it produces; an instance model's
    ``exported_outputs`` in their order (one small probe pass)."""
    probe = model.pixel_mean.expand(1, 3, 64, 64).clone()
    out = model.network(model.normalize(probe))
    if not _semantic(model):
        return tuple(model.exported_outputs(out))
    return ("parsing",) + tuple(k for k in model.extra_outputs if k in out)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _example(model: nn.Module, batch: int = 1) -> torch.Tensor:
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 3, *TRACE_SIZE, generator=g) * 255).to(device)


def _dynamic_axes(net: ExportedNetwork, x: torch.Tensor) -> dict:
    """Batch, height and width of the input; of each output the batch, the last two axes of a map and every
    other axis whose length follows the input size (e.g. an RPN's anchors per level), found by running the
    network at ``x``'s size and at half of it."""
    half = x[..., :x.shape[-2] // 2, :x.shape[-1] // 2]
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    for name, a, b in zip(net.output_names, net(x), net(half)):
        dims = {0: "batch"}
        if a.dim() == 4:
            dims.update({2: f"{name}_height", 3: f"{name}_width"})
        dims.update({i: f"{name}_{i}" for i in range(1, a.dim()) if i not in dims and a.shape[i] != b.shape[i]})
        axes[name] = dims
    return axes


# torch >= 2.9 defaults to the torch.export-based exporter (it needs onnxscript); ask for the TorchScript one
_TORCHSCRIPT_EXPORTER = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


@contextlib.contextmanager
def _quiet_tracing():
    """Silence what tracing says about code this module made trace-safe (symbolic sizes, see
    ``hparse.models.blocks.exporting``; tests/test_export.py checks them), and the exporter's deprecation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # InstanceNorm (e.g. in a U-Net decoder) always normalises with the instance's own statistics: nothing to warn
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to")
        yield


def export_onnx(model: nn.Module, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write ``model``'s :class:`ExportedNetwork` as ONNX (dynamic batch, height and width), atomically."""
    try:
        import onnx
    except ImportError:
        raise HParseError("ONNX export needs the onnx package: pip install 'hparse[onnx]'") from None
    check_exportable(model)
    with _eval_mode(model), torch.no_grad():
        net = ExportedNetwork(model).eval()
        x = _example(model)
        axes = _dynamic_axes(net, x)
        with atomic_path(path) as tmp, _quiet_tracing():
            torch.onnx.export(net, (x,), str(tmp), opset_version=opset, input_names=["image"],
                              output_names=list(net.output_names), dynamic_axes=axes,
                              do_constant_folding=True, **_TORCHSCRIPT_EXPORTER)
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, _metadata(model, net.output_names, f"onnx opset {opset}"))
            onnx.save(proto, str(tmp))
    return Path(path)


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s :class:`ExportedNetwork` traced to TorchScript (``torch.jit.load``; returns a tuple in
    the order of the ``output_names`` in the file's ``hparse.json`` extra file), atomically."""
    check_exportable(model)
    with _eval_mode(model), torch.no_grad():
        net = ExportedNetwork(model).eval()
        with _quiet_tracing():
            traced = torch.jit.trace(net, (_example(model),), check_trace=False)
        meta = json.dumps(_metadata(model, net.output_names, "torchscript"))
        with atomic_path(path) as tmp, _quiet_tracing():
            torch.jit.save(traced, str(tmp), _extra_files={"hparse.json": meta})
    return Path(path)


def _metadata(model: nn.Module, output_names, fmt: str) -> dict[str, str]:
    meta = model.meta
    out = {"hparse.format": fmt, "hparse.task": getattr(model, "task", "semantic"), "hparse.input": INPUT_CONTRACT,
           "hparse.outputs": ",".join(output_names), "hparse.label_set": meta.name,
           "hparse.classes": json.dumps(list(meta.classes))}
    if callable(getattr(model, "export_contract", None)):
        out["hparse.contract"] = model.export_contract()
    return out


def validate_out_path(out: str | Path) -> Path:
    """An :class:`HParseError` for an OUT that is a folder or lies in a missing folder."""
    out = Path(out)
    if out.is_dir():
        raise HParseError(f"OUT {out} is a folder; give the file to write")
    if not out.parent.is_dir():
        raise HParseError(f"OUT {out}: the folder {out.parent} does not exist")
    return out


def export_checkpoint(name_or_path, out: str | Path, fmt: str = "pt", half: bool = False) -> Path:
    """``hparse export``: a checkpoint or shipped model -> slim ``pt`` weights, ``onnx`` or ``torchscript``."""
    from .checkpoint import export_weights, model_from_checkpoint, resolve_weights

    if fmt not in FORMATS:
        raise HParseError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = validate_out_path(out)
    if fmt == "pt":
        return export_weights(resolve_weights(name_or_path), out, half=half)
    if half:
        raise HParseError("--half applies to --format pt only (ONNX and TorchScript exports are float32)")
    model, _, _ = model_from_checkpoint(name_or_path, "cpu")
    return export_onnx(model, out) if fmt == "onnx" else export_torchscript(model, out)
