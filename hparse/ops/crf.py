"""Dense CRF post-processing in plain PyTorch (MMAN Table 4's "+CRF" row; no compiled package installs here).

Mean-field inference of the fully connected CRF of Krähenbühl & Koltun (NIPS'11) with DeepLab's Potts model: each
iteration adds to the log-probabilities the messages ``sum_j k(i, j) Q_j`` of the pixels ``j`` around ``i``, with

    k(i, j) = w_bil exp(-|p_i - p_j|^2 / 2 theta_xy^2 - |I_i - I_j|^2 / 2 theta_rgb^2)
            + w_gauss exp(-|p_i - p_j|^2 / 2 theta_gauss^2)

(positions in pixels of the photo, colours in 0..255). As in ConvCRF (Teichmann & Cipolla, 2018) the sum runs
over a ``window`` x ``window`` neighbourhood of a grid ``downsample`` times coarser than the photo (a truncated
kernel: the exact fully connected sum needs a permutohedral lattice), and the messages are resized back to the
photo. Defaults: DeepLab's kernel widths (theta_xy 80, theta_rgb 13, theta_gauss 3) and weights (w_bil 4,
w_gauss 3), 5 iterations, a 7x7 window on a 4x coarser grid (reaches 12 px around each pixel)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config_schema import CRFConfig


class DenseCRF:
    """The CRF with the parameters of :class:`~hparse.config_schema.CRFConfig` (``eval.crf``; defaults above)."""

    def __init__(self, **params):
        self.p = CRFConfig(**params)   # validated: a bad value raises ValueError naming it

    def __repr__(self) -> str:
        return f"DenseCRF({self.p.model_dump()})"

    def kernel(self, image: torch.Tensor) -> torch.Tensor:
        """(window^2, h, w) pairwise weights on the coarse grid of ``image`` (3, H, W) float, zero for the centre
        and for neighbours outside the photo."""
        p = self.p
        k, ds = p.window, p.downsample
        rgb = F.avg_pool2d(image[None], ds, ceil_mode=True)                          # (1, 3, h, w)
        h, w = rgb.shape[-2:]
        neighbours = F.unfold(rgb, k, padding=k // 2).view(3, k * k, h, w)
        inside = F.unfold(torch.ones(1, 1, h, w), k, padding=k // 2).view(k * k, h, w)
        colour = ((neighbours - rgb[0, :, None]) ** 2).sum(0)                         # (k^2, h, w)
        r = torch.arange(k, dtype=torch.float32) - k // 2
        dist = ((r[:, None] ** 2 + r[None, :] ** 2) * ds * ds).view(k * k, 1, 1)       # squared pixels
        bilateral = torch.exp(-dist / (2 * p.bilateral_xy ** 2) - colour / (2 * p.bilateral_rgb ** 2))
        weights = p.bilateral_weight * bilateral + p.gaussian_weight * torch.exp(-dist / (2 * p.gaussian_xy ** 2))
        weights[k * k // 2] = 0
        return weights * inside

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        """Refined class probabilities (C, H, W) from ``probs`` (C, H, W) and the RGB photo (H, W, 3) uint8."""
        probs = probs.float()
        c, H, W = probs.shape
        if tuple(image.shape[:2]) != (H, W):
            raise ValueError(f"crf: probabilities {H}x{W} and image {image.shape[0]}x{image.shape[1]} differ")
        kernel = self.kernel(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float())
        k2, h, w = kernel.shape
        unary = probs.clamp_min(1e-8).log()
        q = probs
        for _ in range(self.p.iters):
            coarse = F.avg_pool2d(q[None], self.p.downsample, ceil_mode=True)
            msg = (F.unfold(coarse, self.p.window, padding=self.p.window // 2).view(c, k2, h, w) * kernel).sum(1)
            msg = F.interpolate(msg[None], size=(H, W), mode="bilinear", align_corners=False)[0]
            q = (unary + msg).softmax(0)
        return q
