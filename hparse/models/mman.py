"""MMAN (Luo et al., ECCV'18): Macro-Micro Adversarial Network (spec: papers/mman.md; code notes:
reference-notes A.2).

**Generator "Do-DeepLab-ASPP"** (the forward pass; what ``hparse parse`` / the Predictor run):

- encoder: a ResNet at output stride 16 (paper: ResNet-101 with the 7x7 stem, layer4 dilated);
  features ``x1`` (stem, 1/2), ``c2`` (1/4), ``c3`` (1/8), ``c4`` (1/16), ``c5`` (1/16);
- low-resolution head (the "bypass" of Sec. 3.2): DeepLab ASPP on ``c5`` as in the authors' code, a 1x1
  conv plus three 3x3 convs with dilation 2, 4, 6 (each ``c5 -> C``, with bias), concatenated and fused
  by a 1x1 conv -> ``parsing_low`` logits at 1/16 (16x16 for a 256x256 input);
- U-Net decoder (pix2pix blocks, ReLU -> ConvTranspose -> InstanceNorm(affine=False) [-> Dropout]):
  ``up0`` k3 s1 at 1/16, then ``up1..up3`` k4 s2 up to 1/2; after each block the skip feature
  (``c4``, ``c3``, ``c2``, ``x1``) passes a 1x1 conv and is concatenated; a last ReLU -> ConvTranspose
  k4 s2 gives ``parsing`` logits **at the input resolution**. Widths default to the skip widths
  (ResNet-101: 1024, 512, 256, 64 as in the code); ``decoder_channels`` / ``skip_channels`` narrow them;
- ``parsing_mid`` (only with a discriminator on it, Table 5 "Multiple AN"): a 1x1 conv on the 1/4
  decoder features (after the 3rd deconvolution) -> logits at 1/4 (64x64 for 256x256).

Outputs: ``{"parsing", "parsing_low"[, "parsing_mid"]}`` -- generator outputs only.

**Discriminators** form the model's training companion (``model.training_companion()``, an
:class:`~hparse.models.adversarial.AdversarialCritic`): built with the generator, trained beside it by the
trainer's adversarial hook, never part of the model's weights or of an exported network. ``critic.inputs`` maps
each discriminator to the output it judges. A discriminator sees ``concat(label map (C ch), RGB image resized
to the map's size (3 ch))``: real = one-hot ground truth, fake = softmax of the output. All are
``ConvDiscriminator`` stacks of 4x4 convs (padding 1) with LeakyReLU(0.2) and InstanceNorm(affine=False)
after every conv except the first and the scoring one (pix2pix), xavier-normal init:

- ``macro`` (Sec. 3.3) on ``parsing_low``: 4 convs stride 2 (ndf, 2ndf, 4ndf, 1): a 16x16 map (or the
  16x11 map of a 256x176 crop) goes down to one 1x1 score; receptive field 46 > 16, i.e. global;
- ``micro`` (Sec. 3.4, PatchGAN) on ``parsing``: 3 convs stride 2 (ndf, 2ndf, 4ndf) + a 1x1 scoring conv:
  a 22x22 receptive field, one response per patch; the loss averages the responses;
- ``global`` ("Single AN" / the top-layer Macro D of "Double AN") on ``parsing``: stride-2 convs until a
  ``global_size`` map (256) is 1x1 (8 convs), widths capped at ``ndf * global_max_mult``;
- ``micro_mid`` ("Multiple AN"): the micro architecture on ``parsing_mid`` (22x22 patches of 64x64).

An input smaller than a discriminator's minimum size (16 for macro/micro) is zero-padded to it.

**Variants** (Tables 1, 4, 5; ``variant=``): ``baseline`` (no D), ``macro``, ``micro``, ``mman``
(macro + micro), ``single_an`` (global), ``double_an`` (global + micro), ``multiple_an`` (macro + micro +
micro_mid). ``discriminators=[...]`` gives any other combination.

**Paper vs. the authors' code** (reference-notes A.2). Defaults follow the paper; the code's choices
are options: ``decoder_dropout`` (paper: dropout in the deconvolution layers as pix2pix, 0.5 on the
first three decoder blocks; the code never applies it: 0), ``init_std`` (paper: N(0, 0.001) for the
layers not in the encoder; ``None`` = the code: xavier-normal ConvTranspose, N(0, 0.01) ASPP/skip convs),
and the quirk ``keep_bn_training`` (off by default; the code never calls ``.eval()``, so its BatchNorm
layers always normalise with the statistics of the current batch, also at test time -- with this option
``model.eval()`` leaves every BatchNorm in training mode). Not reproduced: the code's residual-block
wrapper (ReLU moved before each block, none between the convs inside it) -- a standard ResNet is used;
the stem skip ``x1`` is taken after the stem ReLU (the code: before it).

The adversarial objective (Eq. 4), the D optimiser and the other code quirks (detached macro loss, D
stepping on 10 % of iterations, sharpened softmax fed to D) are training options: see
``hparse.models.adversarial``, ``hparse.engine.hooks.AdversarialHook`` and ``train.adversarial`` in
``configs/_mman_light_base.yaml``.
Table 4's metrics: ``hparse.metrics.semantic.isolated_pixel_rate`` / ``IPRMeter`` (IPR; we count the
isolated pixels of every label, background included -- a background "hole" inside an arm is local
inconsistency -- over all non-ignored pixels; ``foreground_only=True`` for the foreground variant) and
``low_resolution`` (the "low-resolution mIoU": prediction and ground truth both nearest-downsampled by
16, then the usual confusion matrix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .adversarial import AdversarialCritic
from .backbones import ResNet, build_backbone
from .blocks import upsample_like
from .meta_arch import ParsingModel, label_map

#: discriminator kind -> (generator output it judges, architecture)
DISCRIMINATOR_KINDS: dict[str, tuple[str, str]] = {
    "macro": ("parsing_low", "macro"),
    "micro": ("parsing", "micro"),
    "global": ("parsing", "global"),
    "micro_mid": ("parsing_mid", "micro"),
}

#: Table 5 / Table 1 variants -> discriminators
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "macro": ("macro",),
    "micro": ("micro",),
    "mman": ("macro", "micro"),
    "single_an": ("global",),
    "double_an": ("global", "micro"),
    "multiple_an": ("macro", "micro", "micro_mid"),
}


# --------------------------------------------------------------------------- discriminators


class ConvDiscriminator(nn.Module):
    """A stack of ``kernel``x``kernel`` convs (padding 1) with the given ``strides``.

    Conv ``i`` has ``ndf * min(2**i, max_mult)`` outputs and is followed by InstanceNorm(affine=False)
    (not after the first conv, as pix2pix) and LeakyReLU(0.2). ``score="conv"``: the last conv itself
    outputs the 1-channel score (no norm/activation); ``score="1x1"``: a 1x1 conv scores the last block
    (it does not widen the receptive field). ``norm=False`` drops the InstanceNorms (used by tests to see
    the convolutional receptive field: InstanceNorm statistics couple all positions).

    ``forward(x) -> (B, 1, h, w)`` raw scores (logits); inputs smaller than :attr:`min_size` are
    zero-padded (centred) to it.
    """

    def __init__(self, in_ch: int, ndf: int = 64, strides: Sequence[int] = (2, 2, 2, 2), score: str = "conv",
                 max_mult: int = 8, kernel: int = 4, norm: bool = True):
        super().__init__()
        if score not in ("conv", "1x1"):
            raise ValueError(f"score must be 'conv' or '1x1', got {score!r}")
        self.strides, self.kernel, self.score = tuple(int(s) for s in strides), int(kernel), score
        blocks: list[nn.Module] = []
        ch, n = in_ch, len(self.strides)
        self._normed: list[bool] = []
        for i, s in enumerate(self.strides):
            last = score == "conv" and i == n - 1
            out = 1 if last else ndf * min(2 ** i, max_mult)
            with_norm = norm and i > 0 and not last
            mods: list[nn.Module] = [nn.Conv2d(ch, out, kernel, s, 1, bias=not with_norm)]
            if with_norm:
                mods.append(nn.InstanceNorm2d(out, affine=False))
            if not last:
                mods.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*mods))
            self._normed.append(with_norm)
            ch = out
        if score == "1x1":
            blocks.append(nn.Conv2d(ch, 1, 1))
        self.blocks = nn.Sequential(*blocks)
        self.min_size = self._min_size()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def receptive_field(self) -> int:
        """Side of the square input window one output unit depends on (ignoring InstanceNorm's statistics)."""
        rf, jump = 1, 1
        for s in self.strides:
            rf += (self.kernel - 1) * jump
            jump *= s
        return rf

    def _out(self, n: int, s: int) -> int:
        return (n + 2 - self.kernel) // s + 1

    def _min_size(self) -> int:
        """Smallest side for which every conv has an output and every normalised map has >= 2 pixels a side."""
        for size in range(1, 1 << 16):
            n, ok = size, True
            for s, normed in zip(self.strides, self._normed):
                n = self._out(n, s)
                if n < (2 if normed else 1):
                    ok = False
                    break
            if ok:
                return size
        raise ValueError("no valid input size")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.min_size
        if h < m or w < m:
            ph, pw = max(0, m - h), max(0, m - w)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return self.blocks(x)


def build_discriminator(arch: str, in_ch: int, ndf: int = 64, global_size: int = 256, global_max_mult: int = 4,
                        norm: bool = True) -> ConvDiscriminator:
    """``macro``: 4 stride-2 convs to one score; ``micro``: 3 stride-2 convs + 1x1 (22x22 field);
    ``global``: stride-2 convs until a ``global_size`` map is 1x1."""
    if arch == "macro":
        return ConvDiscriminator(in_ch, ndf, (2, 2, 2, 2), "conv", norm=norm)
    if arch == "micro":
        return ConvDiscriminator(in_ch, ndf, (2, 2, 2), "1x1", norm=norm)
    if arch == "global":
        n = max(1, math.ceil(math.log2(global_size)))
        return ConvDiscriminator(in_ch, ndf, (2,) * n, "conv", max_mult=global_max_mult, norm=norm)
    raise ValueError(f"unknown discriminator architecture {arch!r} (macro, micro, global)")


# --------------------------------------------------------------------------- generator pieces


class DeepLabASPP(nn.Module):
    """MMAN's low-resolution head: 1x1 conv + 3x3 convs with ``dilations`` (each ``in -> C``, bias),
    concatenated, fused by a 1x1 conv -> class logits (no norm, no activation)."""

    def __init__(self, in_ch: int, num_classes: int, dilations: Sequence[int] = (2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(in_ch, num_classes, 1)] + [
            nn.Conv2d(in_ch, num_classes, 3, padding=d, dilation=d) for d in dilations])
        self.fuse = nn.Conv2d(num_classes * len(self.branches), num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([b(x) for b in self.branches], 1))


class UpBlock(nn.Sequential):
    """pix2pix U-Net up block: ReLU -> ConvTranspose2d -> InstanceNorm(affine=False) [-> Dropout]."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 4, stride: int = 2, dropout: float = 0.0):
        mods: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, 1),
                                 nn.InstanceNorm2d(out_ch, affine=False)]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        super().__init__(*mods)


def _init_layers(layers, std: float | None) -> None:
    """The generator's init: N(0, ``std``) for every conv (the paper), or with ``std=None`` the authors' code:
    xavier-normal ConvTranspose, N(0, 0.01) convs; biases zero."""
    for m in layers:
        if not isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            continue
        if std is not None:
            nn.init.normal_(m.weight, 0, std)
        elif isinstance(m, nn.ConvTranspose2d):
            nn.init.xavier_normal_(m.weight)
        else:
            nn.init.normal_(m.weight, 0, 0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _stem_channels(b: ResNet) -> int:
    return (b.bn3 if b.deep_stem else b.bn1).num_features


@MODELS.register("mman")
class MMAN(ParsingModel):
    """Do-DeepLab-ASPP generator + MMAN discriminators; see the module docstring.

    Args:
        meta: the label set (C classes); loss: the config's loss list.
        backbone: backbone config (a ResNet); default ``{name: resnet101, output_stride: 16}``.
        decoder_channels: widths of the 4 decoder blocks (1/16, 1/8, 1/4, 1/2); default the skip widths.
        skip_channels: widths of the 1x1 skip convs on (c4, c3, c2, x1); default their input widths.
        aspp_dilations: dilations of the low-resolution head's 3x3 branches.
        decoder_dropout: dropout after the first three decoder blocks (paper 0.5; code 0).
        init_std: N(0, init_std) for the non-encoder layers (paper 0.001); ``None`` = the code's init.
        variant: one of :data:`VARIANTS`; ``discriminators`` (a list of :data:`DISCRIMINATOR_KINDS`)
            overrides it.
        ndf: base width of the discriminators (paper 64).
        global_size, global_max_mult: the ``global`` discriminator (layers to reach 1x1 on a
            ``global_size`` map; width cap ``ndf * global_max_mult``).
        keep_bn_training: the code's quirk: BatchNorm stays in training mode under ``eval()``.
    """

    renamed_weights = {"discriminators.": None}  # checkpoints of versions that kept D inside the model
    extra_outputs = ("parsing_low",)

    def __init__(self, meta, loss: list[dict] | None = None, backbone: dict | None = None,
                 decoder_channels: Sequence[int] | None = None, skip_channels: Sequence[int] | None = None,
                 aspp_dilations: Sequence[int] = (2, 4, 6), decoder_dropout: float = 0.5,
                 init_std: float | None = 0.001, variant: str = "mman",
                 discriminators: Sequence[str] | None = None, ndf: int = 64, global_size: int = 256,
                 global_max_mult: int = 4, keep_bn_training: bool = False, image_channels: int = 3):
        super().__init__(meta, loss)
        num_classes = self.num_classes
        backbone = dict(backbone or {"name": "resnet101", "output_stride": 16})
        self.backbone = build_backbone(backbone.pop("name"), **backbone)
        if not isinstance(self.backbone, ResNet):
            raise ValueError("MMAN needs a ResNet backbone (it taps the stem for the 1/2 skip)")
        ch = self.backbone.out_channels
        skips_in = [ch["c4"], ch["c3"], ch["c2"], _stem_channels(self.backbone)]
        dec = list(decoder_channels or skips_in)
        sk = list(skip_channels or skips_in)
        if len(dec) != 4 or len(sk) != 4:
            raise ValueError("decoder_channels and skip_channels need 4 entries (1/16, 1/8, 1/4, 1/2)")

        self.aspp = DeepLabASPP(ch["c5"], num_classes, aspp_dilations)
        self.skips = nn.ModuleList(nn.Conv2d(i, o, 1) for i, o in zip(skips_in, sk))
        ins = [ch["c5"]] + [d + s for d, s in zip(dec[:3], sk[:3])]
        self.ups = nn.ModuleList(
            UpBlock(ins[i], dec[i], 3 if i == 0 else 4, 1 if i == 0 else 2, decoder_dropout if i < 3 else 0.0)
            for i in range(4))
        self.head = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(dec[3] + sk[3], num_classes, 4, 2, 1))

        if variant not in VARIANTS:
            raise ValueError(f"unknown MMAN variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant = variant
        names = tuple(discriminators) if discriminators is not None else VARIANTS[variant]
        for n in names:
            if n not in DISCRIMINATOR_KINDS:
                raise ValueError(f"unknown discriminator {n!r}; known: {', '.join(DISCRIMINATOR_KINDS)}")
        inputs = {n: DISCRIMINATOR_KINDS[n][0] for n in names}
        _init_layers([*self.aspp.modules(), *self.skips, *self.ups.modules(), *self.head.modules()], init_std)
        critic = AdversarialCritic({
            n: build_discriminator(DISCRIMINATOR_KINDS[n][1], num_classes + image_channels, ndf, global_size,
                                   global_max_mult) for n in names}, inputs, known=tuple(DISCRIMINATOR_KINDS))
        self.__dict__["critic"] = critic  # not a submodule: outside the model's weights and exports
        # built last, so that at one seed every variant draws the same generator (and the same first
        # discriminators): the table's rows then differ only in what they add
        self.mid_head = nn.Conv2d(dec[2] + sk[2], num_classes, 1) if "parsing_mid" in inputs.values() else None
        if self.mid_head is not None:
            _init_layers([self.mid_head], init_std)
        self.keep_bn_training = keep_bn_training

    # -- generator ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x1 (1/2), c2 (1/4), c3 (1/8), c4 (1/16), c5 (1/16)]``."""
        b = self.backbone
        s = b.stem_features(x)
        c2 = b.layer1(b.maxpool(s))
        c3 = b.layer2(c2)
        c4 = b.layer3(c3)
        return [s, c2, c3, c4, b.layer4(c4)]

    def network(self, x: torch.Tensor) -> dict:
        x1, c2, c3, c4, c5 = self.encode(x)
        out = {"parsing_low": self.aspp(c5)}
        y = c5
        for i, skip in enumerate((c4, c3, c2, x1)):
            s = self.skips[i](skip)
            y = torch.cat([upsample_like(self.ups[i](y), s), s], 1)
            if i == 2 and self.mid_head is not None:
                out["parsing_mid"] = self.mid_head(y)
        out["parsing"] = upsample_like(self.head(y), x)
        return out

    def postprocess(self, extras: dict) -> dict:
        """The generator's low-resolution parsing (``parsing_low``, what the macro discriminator judges) as a
        label map at the image's size: Table 4's low-resolution reading (``hparse eval --low-res-mode generator``)."""
        return {"low_res": label_map(extras["parsing_low"], self.meta.classes)} if "parsing_low" in extras else {}

    # -- modes and loading ---------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.keep_bn_training and not mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(True)
        return self

    def training_companion(self) -> AdversarialCritic | None:
        """The discriminators of this variant (None for the baseline)."""
        return self.critic if len(self.critic) else None
