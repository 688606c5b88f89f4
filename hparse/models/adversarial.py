"""An adversarial critic: discriminators that judge a parser's label maps (MMAN, Luo et al. ECCV'18, Eq. 3-4).

A model trained adversarially returns one from :meth:`~hparse.models.meta_arch.ParsingModel.training_companion`;
the critic is trained beside the model (``hparse.engine.hooks.AdversarialHook`` steps its optimiser) and is never
part of the model's weights. Per iteration (pix2pix order, "we alternately optimize the D and G", MMAN Sec. 4.2):

1. the generator runs once and its usual ``loss`` terms are computed;
2. :meth:`AdversarialCritic.d_loss`: every discriminator scores ``real`` = concat(one-hot ground truth, image) and
   ``fake`` = concat(softmax(output), image), both at the output's resolution (image bilinearly resized, label
   nearest-resized), the fake detached: ``L_D = 0.5 (loss(D(real), real) + loss(D(fake), fake))``;
3. :meth:`AdversarialCritic.g_loss`: with the updated, frozen discriminators,
   ``L_G_adv = sum_d w_d loss(D_d(fake), real)`` joins the generator's losses.

MMAN's Eq. 4 ``L = L_adv(G, D_Ma) + lambda_1 L_ce_low + lambda_2 L_adv(G, D_Mi) + lambda_3 L_ce_high``
(lambda_1 = 25, lambda_2 = 1, lambda_3 = 100) is therefore: ``loss`` terms ``{type: ce, pred: parsing,
weight: 100}`` and ``{type: ce, pred: parsing_low, resize: target, weight: 25}``, and
``train.adversarial.weights: {macro: 1, micro: 1}``. (The authors' code weights CE_high / CE_low / adv_micro /
adv_macro 250 / 50 / 1 / 1.) A patch discriminator's loss averages its responses (the paper's "averages all
responses"). Pixels labelled ignore (255) are zeroed in both the real one-hot map and the fake probabilities, so
padding cannot tell them apart [inference; the authors' LIP pipeline had no ignore pixels].

Critic options (``train.adversarial``; defaults = the paper): ``gan_loss`` ``bce`` (Eq. 3, non-saturating for G)
or ``lsgan`` (the authors' code); ``weights`` per discriminator; the code's quirks, off by default:
``detach_macro: true`` (Macro D sends G no gradient; the term is still logged) and ``d_temperature: 0.2`` (D sees
``softmax(logits / 0.2)`` = the code's ``Softmax2d(5 t)``). Logs per step: ``<D>/d_real``, ``<D>/d_fake`` (the D
loss terms), ``<D>/g`` (G's adversarial loss, unweighted), ``<D>/p_real`` / ``<D>/p_fake`` (mean D output, as a
probability for ``bce``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..labels import IGNORE_INDEX
from ..metrics.semantic import resize_label_nearest

GAN_LOSSES = ("bce", "lsgan")


def d_pair(logits: torch.Tensor, label: torch.Tensor, image: torch.Tensor, temperature: float = 1.0,
           ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, fake)`` discriminator inputs at ``logits``' resolution: concat(one-hot GT | softmax(logits / T),
    image resized), ignored pixels zeroed in both label parts. ``fake`` keeps the graph to the generator."""
    size = logits.shape[-2:]
    c = logits.shape[1]
    lab = resize_label_nearest(label, size)
    valid = (lab != ignore_index) & (lab >= 0) & (lab < c)
    onehot = F.one_hot(torch.where(valid, lab, 0), c).permute(0, 3, 1, 2).float()
    mask = valid.unsqueeze(1).float()
    img = image if tuple(image.shape[-2:]) == tuple(size) else F.interpolate(
        image, size=size, mode="bilinear", align_corners=False, antialias=True)
    prob = (logits.float() / temperature).softmax(1)
    return torch.cat([onehot * mask, img], 1), torch.cat([prob * mask, img], 1)


class AdversarialCritic(nn.Module):
    """Discriminators (``discriminators[name]``) and the output each judges (``inputs[name]``)."""

    def __init__(self, discriminators: dict[str, nn.Module], inputs: dict[str, str], known: tuple[str, ...] = ()):
        super().__init__()
        self.discriminators = nn.ModuleDict(discriminators)
        self.inputs = dict(inputs)
        self.known = tuple(known) or tuple(self.discriminators)
        self.configure()

    def __len__(self) -> int:
        return len(self.discriminators)

    def state_in_model_weights(self, model_state: dict) -> dict:
        """This critic's weights in a model state of versions that kept the discriminators inside the model
        (under the same ``discriminators.*`` names)."""
        return {k: v for k, v in model_state.items() if k.startswith("discriminators.")}

    def configure(self, gan_loss: str = "bce", weights: dict | None = None, detach_macro: bool = False,
                  d_temperature: float = 1.0) -> None:
        """The training options (see the module doc)."""
        if gan_loss not in GAN_LOSSES:
            raise ConfigError(f"train.adversarial.gan_loss: {gan_loss!r} is not one of {GAN_LOSSES}")
        weights = dict(weights or {})
        unknown = set(weights) - set(self.known) - set(self.discriminators)
        if unknown:  # weights of known kinds this variant lacks are ignored (shared configs)
            raise ConfigError(f"train.adversarial.weights: unknown discriminator(s) {sorted(unknown)}; "
                              f"known: {sorted(self.known)}")
        if d_temperature <= 0:
            raise ConfigError("train.adversarial.d_temperature must be > 0")
        self.gan_loss, self.detach_macro, self.temperature = gan_loss, bool(detach_macro), float(d_temperature)
        self.weights = {n: float(weights.get(n, 1.0)) for n in self.discriminators}

    def pairs(self, outputs: dict, label: torch.Tensor, image: torch.Tensor) -> dict:
        """``{D name: (real, fake)}``; two Ds on one output (Double AN) share its pair."""
        out, by_key = {}, {}
        for name, key in self.inputs.items():
            if key not in outputs:
                raise ConfigError(f"discriminator {name} judges output {key!r}, which the model did not return")
            if key not in by_key:
                by_key[key] = d_pair(outputs[key], label, image, self.temperature)
            out[name] = by_key[key]
        return out

    def _loss(self, score: torch.Tensor, real: bool) -> torch.Tensor:
        score = score.float()
        target = torch.full_like(score, 1.0 if real else 0.0)
        if self.gan_loss == "bce":
            return F.binary_cross_entropy_with_logits(score, target)
        return F.mse_loss(score, target)

    def _prob(self, score: torch.Tensor) -> float:
        score = score.detach().float()
        return float((score.sigmoid() if self.gan_loss == "bce" else score).mean())

    def d_loss(self, pairs: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The discriminators' loss on real and (detached) fake maps, and its logs."""
        total, logs = 0.0, {}
        for name, (real, fake) in pairs.items():
            d = self.discriminators[name]
            s_real, s_fake = d(real), d(fake.detach())
            l_real, l_fake = self._loss(s_real, True), self._loss(s_fake, False)
            total = total + 0.5 * (l_real + l_fake)
            logs[f"{name}/d_real"], logs[f"{name}/d_fake"] = float(l_real.detach()), float(l_fake.detach())
            logs[f"{name}/p_real"], logs[f"{name}/p_fake"] = self._prob(s_real), self._prob(s_fake)
        return total, logs

    def g_loss(self, pairs: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's weighted adversarial loss against the discriminators (frozen here), and its logs."""
        self.requires_grad_(False)
        total, logs = 0.0, {}
        for name, (_, fake) in pairs.items():
            if self.detach_macro and name == "macro":
                fake = fake.detach()
            loss = self._loss(self.discriminators[name](fake), True)
            total = total + self.weights[name] * loss
            logs[f"{name}/g"] = float(loss.detach())
        return total, logs
