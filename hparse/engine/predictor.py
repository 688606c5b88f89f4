"""Whole-image inference at the original resolution, with optional multi-scale + flip TTA.

An image is resized so its long side is ``long_side * scale`` (aspect kept), padded to a
multiple of ``size_divisor``, run, cropped, and its logits upsampled bilinearly straight
to the original size (the CNIF protocol, reference-notes B.3). A flipped pass has its
output flipped back and its left/right channels swapped from the dataset metadata
(SCHP's procedure, B.2). Scores from all passes are averaged as logits (default) or as
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# model outputs beyond the parsing that inference can return: boundary logits (2 ch), structure-point
# heatmaps, upper hierarchy levels (logits), fusion gates (B, nodes, 3)
EXTRA_OUTPUTS = ("edge", "structure", "level2", "level3", "gates")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Predictor:
    def __init__(self, model: torch.nn.Module, flip_permutation: Sequence[int] | None = None,
                 long_side: int = 512, scales: Sequence[float] = (1.0,), flip: bool = False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor: int = 32, average: str = "logits",
                 output: str = "parsing", device: str | torch.device = "cpu", channels_last: bool = False):
        if average not in ("logits", "probs"):
            raise ValueError("average must be 'logits' or 'probs'")
        # channels_last: NHWC weights and inputs (about 1.4x faster convolutions on this CPU); converts
        # ``model`` in place, so it is left off for the trainer's own model
        self.channels_last = channels_last
        self.model = model.eval().to(device, memory_format=torch.channels_last if channels_last else None)
        self.device = torch.device(device)
        self.perm = list(flip_permutation) if flip_permutation is not None else None
        self.long_side, self.scales, self.flip = long_side, tuple(scales), flip
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.size_divisor, self.average, self.output = size_divisor, average, output

    def _batch(self, images: list[np.ndarray], scale: float):
        """Resize each image, pad to a common size, normalise -> (tensor, sizes)."""
        sizes, tensors = [], []
        for im in images:
            h, w = im.shape[:2]
            r = self.long_side * scale / max(h, w)
            nh, nw = max(1, round(h * r)), max(1, round(w * r))
            im = np.array(im, dtype=np.uint8, order="C", copy=not im.flags.writeable)
            t = torch.from_numpy(im).to(self.device).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=r < 1)
            tensors.append((t - self.mean) / self.std)
            sizes.append((nh, nw))
        d = self.size_divisor
        H = -(-max(s[0] for s in sizes) // d) * d
        W = -(-max(s[1] for s in sizes) // d) * d
        batch = torch.cat([F.pad(t, (0, W - t.shape[3], 0, H - t.shape[2])) for t in tensors])
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def _upsampled(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(out.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsampled(self.model(x)[self.output], x)

    @torch.no_grad()
    def scores(self, images: list[np.ndarray], with_extras: bool = False):
        """Averaged (C, H, W) scores per image at its original size; with ``with_extras`` also the
        :meth:`extras` of the unflipped scale-1 pass (reused, not recomputed, when 1 is a scale)."""
        acc: list[torch.Tensor | None] = [None] * len(images)
        extras = None
        n = 0
        for s in self.scales:
            x, sizes = self._batch(images, s)
            raw = self.model(x)
            if with_extras and s == 1.0:
                extras = self._extras(raw, x, images, sizes)
            passes = [self._upsampled(raw[self.output], x)]
            if self.flip:
                fl = self._run(x.flip(-1)).flip(-1)
                passes.append(fl[:, self.perm] if self.perm else fl)
            for out in passes:
                n += 1
                for i, (im, (h, w)) in enumerate(zip(images, sizes)):
                    o = F.interpolate(out[i:i + 1, :, :h, :w], size=im.shape[:2], mode="bilinear",
                                      align_corners=False)[0]
                    o = o.softmax(0) if self.average == "probs" else o
                    acc[i] = o if acc[i] is None else acc[i] + o
        scores = [a / n for a in acc]
        if with_extras:
            return scores, extras if extras is not None else self.extras(images)
        return scores

    @torch.no_grad()
    def extras(self, images: list[np.ndarray]) -> list[dict]:
        """The model's extra outputs per image (one pass at scale 1, no flip), at the original size:
        ``boundary`` HxW probability, ``structure`` (J, H, W) heatmaps, ``level2`` / ``level3``
        HxW labels, ``gates`` (nodes, 3). Only what the model produces is returned."""
        x, sizes = self._batch(images, 1.0)
        return self._extras(self.model(x), x, images, sizes)

    def _extras(self, out: dict, x: torch.Tensor, images: list[np.ndarray], sizes) -> list[dict]:
        res: list[dict] = [{} for _ in images]
        for name in EXTRA_OUTPUTS:
            if name not in out:
                continue
            v = out[name].float()
            if v.dim() != 4:
                for r, vi in zip(res, v):
                    r[name] = vi.cpu().numpy()
                continue
            v = self._upsampled(v, x)
            for i, (r, im, (h, w)) in enumerate(zip(res, images, sizes)):
                o = F.interpolate(v[i:i + 1, :, :h, :w], size=im.shape[:2], mode="bilinear", align_corners=False)[0]
                if name == "edge":
                    r["boundary"] = o.softmax(0)[1].cpu().numpy()
                elif name.startswith("level"):
                    r[name] = o.argmax(0).to(torch.uint8).cpu().numpy()
                else:
                    r[name] = o.clamp(min=0).cpu().numpy()
        return res

    def predict(self, images: list[np.ndarray], return_probs: bool = False, with_extras: bool = False):
        """Label maps (uint8, original size), and probabilities (C, H, W float32) on request; with
        ``with_extras`` returns ``(results, extras)`` from the same passes (see :meth:`extras`)."""
        out = []
        scores = self.scores(images, with_extras)
        scores, extras = scores if with_extras else (scores, None)
        for s in scores:
            label = s.argmax(0).to(torch.uint8).cpu().numpy()
            if return_probs:
                probs = s if self.average == "probs" else s.softmax(0)
                out.append((label, probs.float().cpu().numpy()))
            else:
                out.append(label)
        return (out, extras) if with_extras else out
