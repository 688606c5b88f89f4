"""Whole-image inference at the original resolution, with optional multi-scale + flip TTA: the one
test-time geometry of hparse (used by ``hparse parse``, the Python API, evaluation and validation).

An image is resized so its long side is ``long_side * scale`` (aspect kept), padded to a multiple of
``size_divisor`` with the model's mean pixel (0 after the model's normalisation), run, cropped, and its
logits upsampled bilinearly straight to the original size (reference-notes B.3). A
flipped pass has its output flipped back and its left/right channels swapped from the label set (SCHP's
procedure, B.2). Scores from all passes are averaged as logits (default) or as probabilities. Spatial
extras take the same way back from the unflipped scale-1 pass; the model's ``postprocess`` decodes them.

Instance models (``model.task == "instance"``) run through :class:`InstancePredictor`: one pass at
``long_side``, the model's :class:`~hparse.structures.PersonInstances` scaled back to the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def make_predictor(model, eval_cfg: dict, device, tta: bool = False, channels_last: bool = False):
    """The predictor of ``model`` with the settings of a config's ``eval`` section."""
    if getattr(model, "task", "semantic") == "instance":
        return InstancePredictor(model, eval_cfg["long_side"], device=device)
    return Predictor(model, long_side=eval_cfg["long_side"],
                     scales=eval_cfg["tta_scales"] if tta else eval_cfg["scales"], flip=tta or eval_cfg["flip"],
                     average=eval_cfg["average"], device=device, channels_last=channels_last)


class _Resizer:
    """Resize to the long side, pad with the model's mean pixel to a common, divisible size."""

    def __init__(self, model, long_side: int, size_divisor: int, device, channels_last: bool = False):
        self.model, self.long_side, self.size_divisor = model, long_side, size_divisor
        self.device, self.channels_last = torch.device(device), channels_last

    def batch(self, images: Sequence[np.ndarray], scale: float = 1.0) -> tuple[torch.Tensor, list]:
        """-> ``(B, 3, H, W)`` float 0..255 batch, per-image ``(h, w)`` inside it."""
        sizes, tensors = [], []
        for im in images:
            h, w = im.shape[:2]
            r = self.long_side * scale / max(h, w)
            nh, nw = max(1, round(h * r)), max(1, round(w * r))
            im = np.array(im, dtype=np.uint8, order="C", copy=not im.flags.writeable)
            t = torch.from_numpy(im).to(self.device).permute(2, 0, 1)[None].float()
            tensors.append(F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=r < 1))
            sizes.append((nh, nw))
        d = self.size_divisor
        H = -(-max(s[0] for s in sizes) // d) * d
        W = -(-max(s[1] for s in sizes) // d) * d
        canvas = self.model.pixel_mean.to(self.device).expand(len(images), 3, H, W).clone()
        for i, (t, (h, w)) in enumerate(zip(tensors, sizes)):
            canvas[i, :, :h, :w] = t[0]
        if self.channels_last:
            canvas = canvas.contiguous(memory_format=torch.channels_last)
        return canvas, sizes


class Predictor:
    """Semantic models: label maps, class probabilities and the model's extras per image."""

    def __init__(self, model: torch.nn.Module, long_side: int = 512, scales: Sequence[float] = (1.0,),
                 flip: bool = False, size_divisor: int = 32, average: str = "logits",
                 device: str | torch.device = "cpu", channels_last: bool = False):
        if average not in ("logits", "probs"):
            raise ValueError("average must be 'logits' or 'probs'")
        # channels_last: NHWC weights and inputs (about 1.4x faster convolutions on this CPU); converts
        # ``model`` in place, so it is left off for the trainer's own model
        self.model = model.eval().to(device, memory_format=torch.channels_last if channels_last else None)
        self.meta = model.meta
        self.device = torch.device(device)
        self.perm = list(self.meta.flip_permutation())
        self.scales, self.flip, self.average = tuple(scales), flip, average
        self.resizer = _Resizer(self.model, long_side, size_divisor, self.device, channels_last)

    @property
    def long_side(self) -> int:
        return self.resizer.long_side

    def _run(self, x: torch.Tensor):
        return self.model({"image": x})

    @staticmethod
    def _to_image(out: torch.Tensor, x: torch.Tensor, i: int, size, image_size) -> torch.Tensor:
        """Output ``i`` of a batch -> the image's (K, H, W): up to the input, crop the padding, to the image."""
        h, w = size
        up = out[i:i + 1].float()
        if up.shape[-2:] != x.shape[-2:]:
            up = F.interpolate(up, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return F.interpolate(up[:, :, :h, :w], size=image_size, mode="bilinear", align_corners=False)[0]

    @torch.no_grad()
    def scores(self, images: list[np.ndarray], with_extras: bool = False):
        """Averaged (C, H, W) scores per image at its original size; with ``with_extras`` also the model's
        postprocessed extras of the unflipped scale-1 pass (an extra pass when 1 is not a scale)."""
        acc: list[torch.Tensor | None] = [None] * len(images)
        extras, n = None, 0
        for s in self.scales:
            x, sizes = self.resizer.batch(images, s)
            res = self._run(x)
            if with_extras and s == 1.0:
                extras = self._extras(res.extras, x, images, sizes)
            passes = [res.logits]
            if self.flip:
                fl = self._run(x.flip(-1)).logits.float()
                fl = F.interpolate(fl, size=x.shape[-2:], mode="bilinear", align_corners=False).flip(-1)
                passes.append(fl[:, self.perm])
            for out in passes:
                n += 1
                for i, (im, size) in enumerate(zip(images, sizes)):
                    o = self._to_image(out, x, i, size, im.shape[:2])
                    o = o.softmax(0) if self.average == "probs" else o
                    acc[i] = o if acc[i] is None else acc[i] + o
        scores = [a / n for a in acc]
        if with_extras:
            return scores, extras if extras is not None else self.extras(images)
        return scores

    @torch.no_grad()
    def extras(self, images: list[np.ndarray]) -> list[dict]:
        """The model's extras per image (one pass at scale 1, no flip), decoded by its ``postprocess``."""
        x, sizes = self.resizer.batch(images, 1.0)
        return self._extras(self._run(x).extras, x, images, sizes)

    def _extras(self, raw: dict, x: torch.Tensor, images, sizes) -> list[dict]:
        out = []
        for i, (im, size) in enumerate(zip(images, sizes)):
            one = {k: self._to_image(v, x, i, size, im.shape[:2]) if v.dim() == 4 else v[i] for k, v in raw.items()}
            out.append(self.model.postprocess(one))
        return out

    def predict(self, images: list[np.ndarray], return_probs: bool = False, with_extras: bool = False):
        """Label maps (uint8, original size), and probabilities (C, H, W float32) on request; with
        ``with_extras`` returns ``(results, extras)`` from the same passes (see :meth:`extras`)."""
        scores = self.scores(images, with_extras)
        scores, extras = scores if with_extras else (scores, None)
        out = []
        for s in scores:
            label = s.argmax(0).to(torch.uint8).cpu().numpy()
            if return_probs:
                probs = s if self.average == "probs" else s.softmax(0)
                out.append((label, probs.float().cpu().numpy()))
            else:
                out.append(label)
        return (out, extras) if with_extras else out

    def outputs(self, images: list[np.ndarray], with_extras: bool = False) -> list[dict]:
        """Evaluator inputs: ``{"sem_seg": label map[, "extras": {name: array}]}`` per image."""
        if not with_extras:
            return [{"sem_seg": label} for label in self.predict(images)]
        labels, extras = self.predict(images, with_extras=True)
        return [{"sem_seg": label, "extras": {k: np.asarray(v) for k, v in ex.items()}}
                for label, ex in zip(labels, extras)]


class InstancePredictor:
    """Instance models: :class:`~hparse.structures.PersonInstances` per image at its original size."""

    def __init__(self, model: torch.nn.Module, long_side: int = 512, size_divisor: int = 32,
                 device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.meta = model.meta
        self.resizer = _Resizer(self.model, long_side, size_divisor, device)

    @torch.no_grad()
    def predict(self, images: list[np.ndarray]) -> list:
        x, sizes = self.resizer.batch(images)
        results = self.model({"image": x, "image_sizes": sizes})
        return [self.model.postprocess(r, size, im.shape[:2]) for r, size, im in zip(results, sizes, images)]

    def outputs(self, images: list[np.ndarray], with_extras: bool = False) -> list[dict]:
        return [{"instances": p, "sem_seg": p.to_semantic()} for p in self.predict(images)]
