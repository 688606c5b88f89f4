"""Run a float TensorFlow Lite model in PyTorch: its flatbuffer read with the ``tflite`` package (Apache-2.0), each
operator of the main graph mapped onto the torch function that computes it. Covers what small float MobileNet-style
segmenters use (MediaPipe's selfie segmenter); any other operator is named in a clear error.

Activations run NCHW; the graph's 4-D tensors are NHWC, so axes and constants are turned as they are read. Weights
stored as float16 behind ``DEQUANTIZE`` are folded to float32 constants when the graph is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HParseError

_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2}   # an NHWC axis of a 4-D tensor -> its NCHW axis


def _activation(code: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fused activation (TFLite's ActivationFunctionType)."""
    acts = {0: lambda t: t, 1: F.relu, 2: lambda t: t.clamp(-1, 1), 3: F.relu6, 4: torch.tanh}
    if code not in acts:
        raise HParseError(f"fused activation {code} is not supported")
    return acts[code]


def _same_padding(x: torch.Tensor, kernel, stride, dilation=(1, 1)) -> torch.Tensor:
    """TensorFlow's SAME padding (the odd pixel after) for a (kh, kw) window."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


class TFLiteGraph(torch.nn.Module):
    """The main graph of a ``.tflite`` file as a module: ``forward`` takes and returns NHWC tensors, as the file
    states them (one input, one output)."""

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            import tflite
        except ImportError as e:    # pragma: no cover - a dependency of hparse
            raise HParseError("reading .tflite files needs the tflite package: pip install tflite") from e
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise HParseError(f"{self.path}: cannot read ({e})") from None
        if data[4:8] != b"TFL3":    # the flatbuffer's file identifier
            raise HParseError(f"{self.path}: not a TensorFlow Lite model (no TFL3 identifier)")
        try:
            model = tflite.Model.GetRootAsModel(data, 0)
            graph = model.Subgraphs(0)
        except Exception as e:  # noqa: BLE001 - the flatbuffer reader raises anything on damaged bytes
            raise HParseError(f"{self.path}: damaged TensorFlow Lite model ({e.__class__.__name__})") from None
        if graph is None:
            raise HParseError(f"{self.path}: the TensorFlow Lite model has no graph")
        self._tflite, self._model, self._graph, self._data = tflite, model, graph, data
        if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
            raise HParseError(f"{self.path}: graphs with one input and one output only")
        self.input_index, self.output_index = int(graph.Inputs(0)), int(graph.Outputs(0))
        self.input_shape = tuple(int(v) for v in graph.Tensors(self.input_index).ShapeAsNumpy())
        self.constants: dict[int, torch.Tensor] = {}
        self.steps: list[tuple[Callable, list[int], int]] = []
        try:
            for j in range(graph.OperatorsLength()):
                self._add(graph.Operators(j))
        except HParseError:
            raise
        except Exception as e:  # noqa: BLE001 - inconsistent shapes or options in a damaged file
            raise HParseError(f"{self.path}: damaged TensorFlow Lite model ({e.__class__.__name__}: {e})") from None
        del self._model, self._graph, self._data, self._tflite

    # -- reading -------------------------------------------------------------------------------------------
    def _op_name(self, op) -> str:
        code = self._model.OperatorCodes(op.OpcodeIndex())
        if code.CustomCode():
            return code.CustomCode().decode()
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        return next((k for k, v in vars(self._tflite.BuiltinOperator).items() if v == number), str(number))

    def _constant(self, index: int) -> torch.Tensor | None:
        """Tensor ``index`` as stored in the file (NHWC), or None for an activation."""
        if index in self.constants:
            return self.constants[index]
        tensor = self._graph.Tensors(index)
        buffer = self._model.Buffers(tensor.Buffer())
        if buffer.Offset() > 1:     # large models keep their data after the flatbuffer
            raw = np.frombuffer(self._data, np.uint8, buffer.Size(), buffer.Offset())
        else:
            raw = buffer.DataAsNumpy() if buffer.DataLength() else None
        if raw is None or isinstance(raw, int):
            return None
        dtype = _DTYPES.get(tensor.Type())
        if dtype is None:
            raise HParseError(f"{self.path}: tensor type {tensor.Type()} is not supported (float models only)")
        shape = [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        value = torch.from_numpy(np.frombuffer(raw.tobytes(), dtype).reshape(shape).copy())
        return value.float() if value.is_floating_point() else value

    def _add(self, op) -> None:
        name = self._op_name(op)
        inputs = [int(i) for i in op.InputsAsNumpy()]
        output = int(op.OutputsAsNumpy()[0])
        consts = [self._constant(i) if i >= 0 else None for i in inputs]
        if name == "DEQUANTIZE" and consts[0] is not None:
            self.constants[output] = consts[0].float()
            return
        build = getattr(self, f"_op_{name.lower()}", None)
        if build is None:
            raise HParseError(f"{self.path}: operator {name} is not supported")
        fn, live = build(op, inputs, consts)
        self.steps.append((fn, live, output))

    def _nchw(self, value: torch.Tensor) -> torch.Tensor:
        return value.permute(*_NHWC_TO_NCHW) if value.dim() == 4 else value

    # -- operators: each returns (function of the live inputs, the live input indices) ------------------------
    def _op_conv_2d(self, op, inputs, consts):
        o = _options(op, self._tflite.Conv2DOptions)
        weight = consts[1].permute(0, 3, 1, 2).contiguous()       # OHWI -> OIHW
        bias = consts[2] if len(consts) > 2 else None
        stride, dilation = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        return self._windowed(lambda x: F.conv2d(x, weight, bias, stride, dilation=dilation), weight.shape[-2:],
                              stride, dilation, o.Padding(), o.FusedActivationFunction()), inputs[:1]

    def _op_depthwise_conv_2d(self, op, inputs, consts):
        o = _options(op, self._tflite.DepthwiseConv2DOptions)
        weight = consts[1].permute(3, 0, 1, 2).contiguous()       # 1HW(C*m) -> (C*m)1HW
        channels = weight.shape[0] // max(o.DepthMultiplier(), 1)
        stride, dilation = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        return self._windowed(lambda x: F.conv2d(x, weight, consts[2], stride, dilation=dilation, groups=channels),
                              weight.shape[-2:], stride, dilation, o.Padding(), o.FusedActivationFunction()), inputs[:1]

    def _op_average_pool_2d(self, op, inputs, consts):
        o = _options(op, self._tflite.Pool2DOptions)
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        act = _activation(o.FusedActivationFunction())
        if o.Padding() != 0:    # VALID
            return (lambda x: act(F.avg_pool2d(x, kernel, stride))), inputs[:1]

        def pool(x):            # SAME: TensorFlow averages over the window's pixels inside the image only
            ones = _same_padding(torch.ones_like(x[:1, :1]), kernel, stride)
            return act(F.avg_pool2d(_same_padding(x, kernel, stride), kernel, stride, divisor_override=1)
                       / F.avg_pool2d(ones, kernel, stride, divisor_override=1))
        return pool, inputs[:1]

    def _windowed(self, fn, kernel, stride, dilation, padding: int, activation: int):
        act = _activation(activation)
        if padding == 0:        # SAME
            return lambda x: act(fn(_same_padding(x, kernel, stride, dilation)))
        return lambda x: act(fn(x))

    def _binary(self, op, inputs, consts, options, combine):
        act = _activation(_options(op, options).FusedActivationFunction() if op.BuiltinOptions() else 0)
        live = [i for i, c in zip(inputs, consts) if c is None]
        values = [None if c is None else self._nchw(c) for c in consts]

        def fn(*xs):
            it = iter(xs)
            a, b = (next(it) if v is None else v for v in values)
            return act(combine(a, b))
        return fn, live

    def _op_add(self, op, inputs, consts):
        return self._binary(op, inputs, consts, self._tflite.AddOptions, torch.add)

    def _op_mul(self, op, inputs, consts):
        return self._binary(op, inputs, consts, self._tflite.MulOptions, torch.mul)

    def _op_relu(self, op, inputs, consts):
        return F.relu, inputs[:1]

    def _op_relu6(self, op, inputs, consts):
        return F.relu6, inputs[:1]

    def _op_hard_swish(self, op, inputs, consts):
        return F.hardswish, inputs[:1]

    def _op_logistic(self, op, inputs, consts):
        return torch.sigmoid, inputs[:1]

    def _op_mean(self, op, inputs, consts):
        keep = bool(_options(op, self._tflite.ReducerOptions).KeepDims())
        axes = tuple(_AXIS[int(a)] for a in consts[1].reshape(-1).tolist())
        return (lambda x: x.mean(dim=axes, keepdim=keep)), inputs[:1]

    def _op_resize_bilinear(self, op, inputs, consts):
        o = _options(op, self._tflite.ResizeBilinearOptions)
        size = tuple(int(v) for v in consts[1].tolist())
        if o.AlignCorners():
            return (lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=True)), inputs[:1]
        if o.HalfPixelCenters():
            return (lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)), inputs[:1]
        return (lambda x: _resize_asymmetric(x, size)), inputs[:1]

    def _op_convolution2dtransposebias(self, op, inputs, consts):
        """MediaPipe's custom transposed convolution with a bias; its options are (padding, stride w, stride h)."""
        padding, stride_w, stride_h = np.frombuffer(op.CustomOptionsAsNumpy().tobytes()[:12], np.int32)
        weight = consts[1].permute(3, 0, 1, 2).contiguous()       # OHWI -> IOHW
        kernel = weight.shape[-2:]
        if padding != 1 and padding != 2 or (padding == 1 and tuple(kernel) != (stride_h, stride_w)):
            raise HParseError(f"{self.path}: transposed convolution with padding {padding}, kernel {tuple(kernel)} "
                              f"and stride {(stride_h, stride_w)} is not supported")
        return (lambda x: F.conv_transpose2d(x, weight, consts[2], (int(stride_h), int(stride_w)))), inputs[:1]

    # -- running ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_index: self._nchw(x.float())}
        for fn, live, out in self.steps:
            values[out] = fn(*(values[i] for i in live))
        y = values[self.output_index]
        return y.permute(0, 2, 3, 1) if y.dim() == 4 else y


def _resize_asymmetric(x: torch.Tensor, size) -> torch.Tensor:
    """TensorFlow's legacy bilinear resize (no half-pixel offset: source = destination * in / out)."""
    out = x
    for dim, n in ((2, size[0]), (3, size[1])):
        m = out.shape[dim]
        pos = torch.arange(n, dtype=torch.float32) * (m / n)
        lo = pos.floor().long().clamp(max=m - 1)
        hi = (lo + 1).clamp(max=m - 1)
        w = (pos - lo).view(*([1] * dim), n, *([1] * (3 - dim)))
        out = out.index_select(dim, lo) * (1 - w) + out.index_select(dim, hi) * w
    return out
