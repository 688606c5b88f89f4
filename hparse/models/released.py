"""Released checkpoints of other projects as hparse models: SCHP's (GoGoDuck912/Self-Correction-Human-Parsing,
``AugmentCE2P``) and CE2P's (liutinglt/CE2P) ResNet-101 parsers are hparse's paper-size CE2P, module for module.

What a release needs, from its own code (read, not copied):

- keys, after DataParallel's ``module.`` prefix: the deep-stem ResNet-101 as hparse's backbone; the PSP module
  (``context_encoding`` in SCHP, ``layer5`` in CE2P) with each bin's conv and BN one level deeper here; the
  edge module (``edge`` / ``edge_layer``) whose shared 3x3 logit conv is ``conv4`` and fuse conv ``conv5``; the
  decoder (``decoder`` / ``layer6``) whose two conv + BN pairs are grouped here; the fusion head (``fushion`` /
  ``layer7``: conv, BN, dropout, conv). BN layers of the heads are ``InPlaceABNSync`` with its default
  activation: BN + LeakyReLU(0.01), hparse's ``act="leaky"``; the backbone's are BN + ReLU. ``InPlaceABNSync``
  keeps no ``num_batches_tracked``.
- input: both read images with OpenCV (BGR, 0..1). SCHP normalises B, G, R with (0.406, 0.456, 0.485) /
  (0.225, 0.224, 0.229), i.e. ImageNet's RGB statistics; CE2P uses ImageNet's RGB-ordered statistics on its BGR
  channels (reference-notes, "Normalisation quirk"). hparse feeds RGB: the first conv's input channels are
  reversed, and the statistics become RGB-ordered ones that give each channel what it had.
- test size: SCHP's 473 x 473 for LIP, 512 x 512 for ATR and PASCAL-Person-Part (its ``dataset_settings``);
  hparse keeps the aspect ratio with the long side at that size.

Known difference: CE2P's decoder upsamples the context with ``align_corners=False`` (PyTorch's default), SCHP's
and hparse's with ``True`` (sub-pixel; logits move slightly at the same weights).
"""

from __future__ import annotations

import re

import torch

from ..errors import HParseError

IMAGENET_RGB = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: what each release feeds its network, as RGB-ordered (mean, std) on 0..1 images
INPUT_STATS = {"schp": IMAGENET_RGB, "ce2p": ((0.406, 0.456, 0.485), (0.225, 0.224, 0.229))}
#: SCHP's test sizes per label set (long side here); other label sets take LIP's
LONG_SIDE = {"lip": 473, "atr": 512, "pascal_person_part": 512}
#: the label set a class count most likely means (the releases: LIP 20, ATR 18, PASCAL-Person-Part 7)
LABEL_SET_OF_CLASSES = {20: "lip", 18: "atr", 7: "pascal_person_part"}
#: the hparse config whose training and evaluation settings a released model takes (its model section replaced)
BASE_CONFIG = "ce2p_r101_ccp"
MODEL_CONFIG = {"type": "ce2p", "backbone": {"name": "resnet101", "deep_stem": True, "output_stride": 16},
                "ppm_ch": 512, "edge_ch": 256, "decoder_ch": 256, "fusion_ch": 256}

#: each release's names of the PSP module, edge module, decoder and fusion head
_HEADS = {"schp": ("context_encoding", "edge", "decoder", "fushion"),
          "ce2p": ("layer5", "edge_layer", "layer6", "layer7")}


def _rules(release: str) -> list[tuple[str, str]]:
    ctx, edge, dec, fus = (re.escape(n) for n in _HEADS[release])
    return [
        (rf"^{ctx}\.stages\.(\d)\.1\.", r"trunk.context.stages.\1.1.0."),
        (rf"^{ctx}\.stages\.(\d)\.2\.", r"trunk.context.stages.\1.1.1."),
        (rf"^{ctx}\.bottleneck\.", "trunk.context.bottleneck."),
        (rf"^{edge}\.conv4\.", "trunk.edge.shared."),
        (rf"^{edge}\.conv5\.", "trunk.edge.fuse."),
        (rf"^{edge}\.(conv[123])\.", r"trunk.edge.\1."),
        (rf"^{dec}\.conv3\.([01])\.", r"trunk.decoder.conv3.0.\1."),
        (rf"^{dec}\.conv3\.2\.", "trunk.decoder.conv3.1.0."),
        (rf"^{dec}\.conv3\.3\.", "trunk.decoder.conv3.1.1."),
        (rf"^{dec}\.", "trunk.decoder."),
        (rf"^{fus}\.([01])\.", r"fusion.0.\1."),
        (rf"^{fus}\.3\.", "fusion.2."),
        (r"^(conv[123]|bn[123]|layer[1-4])\.", r"trunk.backbone.\1."),
    ]


def unwrapped(state: dict) -> dict:
    """The tensors of a saved state dict: under ``state_dict`` (SCHP's training checkpoints) or at the top,
    DataParallel's ``module.`` prefix removed."""
    state = state.get("state_dict", state)
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def identify(raw) -> tuple[dict, str] | None:
    """``(unwrapped state dict, "schp" | "ce2p")`` of a saved file's content, or None when it is neither."""
    state = unwrapped(raw) if isinstance(raw, dict) else {}
    release = release_of(state)
    return None if release is None else (state, release)


def release_of(state: dict) -> str | None:
    """``"schp"``, ``"ce2p"`` or None: whose naming an (unwrapped) state dict has."""
    keys = set(state)
    for release, (ctx, _, _, fus) in _HEADS.items():
        if f"{fus}.3.weight" in keys and any(k.startswith(f"{ctx}.stages.") for k in keys):
            return release
    return None


def num_classes_of(state: dict, release: str) -> int:
    return int(state[f"{_HEADS[release][3]}.3.weight"].shape[0])


def default_label_set(state: dict, release: str) -> str:
    """The label set a release's class count implies (LIP 20, ATR 18, PASCAL-Person-Part 7)."""
    n = num_classes_of(state, release)
    if n not in LABEL_SET_OF_CLASSES:
        raise HParseError(f"a released checkpoint with {n} classes: name its label set (label_set=...)")
    return LABEL_SET_OF_CLASSES[n]


def renamed(state: dict, release: str) -> dict:
    """The release's tensors under hparse CE2P names, the first conv taking RGB."""
    rules = [(re.compile(p), r) for p, r in _rules(release)]
    out = {}
    for key, value in state.items():
        new = next((rx.sub(r, key) for rx, r in rules if rx.search(key)), None)
        if new is None:
            raise HParseError(f"a {release.upper()} checkpoint key hparse does not know: {key!r}")
        out[new] = value
    out["trunk.backbone.conv1.weight"] = out["trunk.backbone.conv1.weight"].flip(1)  # BGR -> RGB input channels
    return out


def released_model(state: dict, release: str, meta, build) -> tuple[torch.nn.Module, dict]:
    """``(model, model config)`` from a release's unwrapped state dict (:func:`identify`) for label set ``meta``;
    ``build`` is :func:`hparse.models.build_model`. The weights load strictly (every key and shape accounted
    for)."""
    n = num_classes_of(state, release)
    if n != meta.num_classes:
        raise HParseError(f"the {release.upper()} checkpoint has {n} classes, label set {meta.name!r} "
                          f"{meta.num_classes}")
    mean, std = INPUT_STATS[release]
    cfg = {**MODEL_CONFIG, "pixel_mean": list(mean), "pixel_std": list(std)}
    model = build(cfg, meta)
    mine = model.state_dict()
    state = renamed(state, release)
    state.update({k: v for k, v in mine.items() if k.endswith("num_batches_tracked") and k not in state})
    missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    wrong = [k for k in state if k in mine and state[k].shape != mine[k].shape]
    if missing or unexpected or wrong:
        raise HParseError(f"the {release.upper()} checkpoint does not fit a ResNet-101 CE2P: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}")
    model.load_state_dict({k: v.to(mine[k].dtype) for k, v in state.items()})
    return model, cfg
