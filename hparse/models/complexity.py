"""Model complexity: parameter and multiply-accumulate (MAC) counts.

``count_macs`` runs one forward pass under ``torch.no_grad()`` (in eval mode; the mode is restored) with
forward hooks on the layers that dominate the cost:

- ``Conv2d``: ``out.numel() * (C_in / groups) * kh * kw`` (dilation and padding do not change it);
- ``ConvTranspose2d``: ``in.numel() * (C_out / groups) * kh * kw`` (each input element
  meets every kernel tap);
- ``Linear``: ``out.numel() * in_features``;
- with ``include_norm=True``: ``BatchNorm`` / ``GroupNorm`` / ``InstanceNorm`` / ``LayerNorm`` count one MAC
  per output element (a per-channel scale and shift; foldable into a conv at deploy time, so off by default).

and, with ``include_matmul=True`` (the default), the tensor products that are functions rather than modules --
the affinity and aggregation products of attention blocks (non-local, DANet, ACENet's LCM/GEM) -- caught
without hooks by a ``TorchFunctionMode`` for the duration of the forward pass:

- ``matmul`` / ``@`` / ``mm`` / ``bmm`` (and ``addmm`` / ``baddbmm``): ``out.numel() * k``, ``k`` the
  contracted length (``(n, k) @ (k, m)`` -> ``n * k * m`` per batch element);
- ``einsum`` with two operands: the product of the sizes of all distinct indices (ellipsis dims included);
  with more operands that product times ``operands - 1`` (an estimate: the real cost depends on the path);
- ``scaled_dot_product_attention``: ``batch * L * S * (E + E_v)``.

Nested calls are seen once (the mode is off while its handler runs, so ``einsum`` -> ``bmm`` is not counted
twice); ``F.linear`` / ``conv2d`` are left to the module hooks.  Bias additions, activations, softmax, pooling
and resizing are not counted.  One MAC = one multiply + one add (1 GMAC ~ 2 GFLOPs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_training_params(model: nn.Module) -> int:
    """Parameters trained with ``model``: its own and its training companion's (e.g. MMAN's discriminators)."""
    companion = getattr(model, "training_companion", lambda: None)()
    return count_params(model) + (count_params(companion) if companion is not None else 0)


def _conv_macs(m: nn.Conv2d, inp: tuple, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _convT_macs(m: nn.ConvTranspose2d, inp: tuple, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return inp[0].numel() * (m.out_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, inp: tuple, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _norm_macs(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    return out.numel()


def _einsum_macs(args: tuple) -> int:
    eq, ops = args[0], args[1:]
    if len(ops) == 1 and isinstance(ops[0], list | tuple):
        ops = tuple(ops[0])
    if len(ops) < 2:
        return 0
    sizes: dict[str, int] = {}
    ell: list[int] = []  # broadcast ellipsis dims, aligned from the right
    for spec, t in zip(eq.split("->")[0].replace(" ", "").split(","), ops):
        letters = spec.replace("...", "")
        if "..." in spec:
            head = spec.index("...")
            n_ell = t.dim() - len(letters)
            dims = list(t.shape[head:head + n_ell])
            pad = len(dims) - len(ell)
            ell = ([1] * max(0, pad)) + ell
            for i, d in enumerate(dims[::-1]):
                ell[-1 - i] = max(ell[-1 - i], int(d))
            shape = list(t.shape[:head]) + list(t.shape[head + n_ell:])
        else:
            shape = list(t.shape)
        for letter, d in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(d))
    return math.prod(sizes.values()) * math.prod(ell) * (len(ops) - 1)


def _matmul_macs(name: str, args: tuple, kwargs: dict, out) -> int:
    """MACs of one tensor-product call (see the module docstring); 0 for anything else."""
    if not isinstance(out, torch.Tensor):
        return 0
    if name in ("matmul", "__matmul__", "mm", "bmm"):
        a = args[0]
    elif name == "__rmatmul__":
        a = args[1]
    elif name in ("addmm", "baddbmm"):
        a = args[1] if len(args) > 1 else kwargs.get("mat1", kwargs.get("batch1"))
    elif name == "einsum":
        return _einsum_macs(args)
    elif name == "scaled_dot_product_attention":
        q, k, v = args[0], args[1] if len(args) > 1 else kwargs["key"], args[2] if len(args) > 2 else kwargs["value"]
        return out.numel() // v.shape[-1] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    else:
        return 0
    if not isinstance(a, torch.Tensor) or a.dim() == 0:
        return 0
    return out.numel() * int(a.shape[-1])


_MATMUL_NAMES = frozenset({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "einsum",
                           "scaled_dot_product_attention"})


class _MatmulCounter(TorchFunctionMode):
    """Counts the MACs of tensor-product functions called while active (see ``_matmul_macs``)."""

    def __init__(self, on_count):
        super().__init__()
        self.on_count = on_count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _MATMUL_NAMES:
            n = _matmul_macs(name, args, kwargs, out)
            if n:
                self.on_count(n)
        return out


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 512, 512), *, include_norm: bool = False,
               include_matmul: bool = True, inputs: torch.Tensor | None = None,
               per_module: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_size`` (or on ``inputs``).

    The model may return anything (tensor, dict, tuple); for an hparse model its ``network`` is run.
    ``per_module``, when a dict, is filled with the
    MACs of each counted leaf module by qualified name; matmul MACs (``include_matmul``) go to the innermost
    module whose ``forward`` made the call (``""`` for the model itself).
    """
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = inputs if inputs is not None else torch.zeros(tuple(input_size), device=device, dtype=dtype)

    total = [0]
    handles = []

    def add(name, fn):
        def hook(m, inp, out):
            n = int(fn(m, inp, out))
            total[0] += n
            if per_module is not None:
                per_module[name] = per_module.get(name, 0) + n
        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(add(name, _conv_macs)))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(add(name, _convT_macs)))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(add(name, _linear_macs)))
        elif include_norm and isinstance(m, _NORMS):
            handles.append(m.register_forward_hook(add(name, _norm_macs)))

    stack: list[str] = []
    if include_matmul and per_module is not None:   # the module stack only serves the attribution
        def push(name):
            def hook(m, inp):
                stack.append(name)
            return hook

        def pop(m, inp, out):
            stack.pop()

        for name, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(push(name)))
            handles.append(m.register_forward_hook(pop))

    def add_matmul(n: int) -> None:
        total[0] += n
        if per_module is not None:
            key = stack[-1] if stack else ""
            per_module[key] = per_module.get(key, 0) + n

    run = getattr(model, "network", model)  # hparse models: the network on a normalised batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if include_matmul:
                with _MatmulCounter(add_matmul):
                    run(x)
            else:
                run(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]


def format_count(n: float, precision: int = 2) -> str:
    """``4_710_000 -> "4.71M"``, ``2_350_000_000 -> "2.35G"``; decimal units K/M/G/T."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{precision}f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.{precision}f}"
