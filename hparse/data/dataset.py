"""A torch ``Dataset`` over a reader plus transforms, deterministic per (seed, epoch, index).

Each sample's random augmentation comes from its own generator seeded by
``(seed, epoch, index)``, so results do not depend on worker count or on where a resumed
run restarts. A sample that fails to load is reported once and replaced by the next
readable one, so one bad file never ends an epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError

log = logging.getLogger("hparse.data")


class MixedReader(Sequence):
    """Several readers of one label set read as one: their samples in turn (reader by reader), each keeping only
    the keys every reader's samples have (e.g. a single-person set with composed multi-person canvases: image and
    semantic label)."""

    def __init__(self, readers: list):
        names = {r.meta.name for r in readers}
        if len(names) > 1:
            raise DataError(f"training sets of different label sets cannot be mixed: {sorted(names)}")
        self.readers, self.meta = list(readers), readers[0].meta
        self.starts = np.cumsum([0] + [len(r) for r in readers])
        self.keys = set.intersection(*(set(r[0]) for r in readers)) if all(len(r) for r in readers) else set()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        sample = self.readers[k][i - int(self.starts[k])]
        return {key: value for key, value in sample.items() if key in self.keys}


class ParsingDataset(Dataset):
    def __init__(self, reader, transforms, seed: int = 0, max_retries: int = 16):
        self.reader, self.transforms = reader, transforms
        self.seed, self.epoch, self.max_retries = seed, 0, max_retries
        self.bad: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        n = len(self.reader)
        for k in range(self.max_retries):
            j = (i + k) % n
            try:
                sample = self.reader[j]
            except DataError as e:
                if j not in self.bad:
                    self.bad.add(j)
                    log.warning("skipping unreadable sample: %s", e)
                continue
            rng = np.random.default_rng([self.seed, self.epoch, j])
            return self.transforms(sample, rng) if self.transforms else sample
        raise DataError(f"{self.max_retries} consecutive samples from index {i} could not be read")


def class_presence(reader, num_classes: int, progress: bool = False) -> np.ndarray:
    """Which classes occur in each labelled sample of ``reader`` (samples x classes, bool; a sample that fails to
    load counts as holding none)."""
    from tqdm import tqdm

    present = np.zeros((len(reader), num_classes), bool)
    for i in tqdm(range(len(reader)), desc="class presence", disable=not progress):
        try:
            label = reader[i]["label"]
        except DataError:
            continue
        present[i] = np.bincount(label[label < num_classes].ravel(), minlength=num_classes) > 0
    return present


def repeat_factors(present: np.ndarray, threshold: float) -> np.ndarray:
    """LVIS's repeat factor per image from ``present`` (images x classes, bool: the class occurs in the image):
    a class seen in a fraction f of the images gets r = max(1, sqrt(threshold / f)), an image the largest r of
    its classes, so images holding rare classes are drawn more often."""
    present = np.asarray(present, bool)
    freq = present.mean(0)
    class_r = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12)))
    return np.where(present, class_r[None, :], 1.0).max(1, initial=1.0)


class EpochSampler(Sampler):
    """A seeded permutation per epoch that can start part-way (for exact resume), shared by ``world`` processes:
    the permutation is cut into batches of ``batch_size`` and process ``rank`` takes every ``world``-th batch
    from its ``rank``-th, so the processes' batches of one step are the consecutive batches a single process
    would take with ``world`` times the gradient accumulation. ``start`` counts this process's samples."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, batch_size: int = 1, rank: int = 0,
                 world: int = 1, repeats: np.ndarray | None = None):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch, self.start = 0, 0
        self.repeats = None if repeats is None else np.asarray(repeats, np.float64)
        if self.repeats is not None and (self.repeats.shape != (n,) or (self.repeats < 1).any()):
            raise DataError(f"repeat factors must be {n} numbers >= 1")

    @property
    def epoch_length(self) -> int:
        """Samples per epoch: the dataset's size, or the sum of the repeat factors (rounded)."""
        return self.n if self.repeats is None or not self.shuffle else int(round(self.repeats.sum()))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        if self.repeats is None:
            return torch.randperm(self.n, generator=g).tolist()
        # repeat-factor sampling (LVIS): index i appears floor(r_i) times, once more with probability frac(r_i);
        # the shuffled list is cut or cycled to the fixed epoch length so the schedule stays fixed
        r = torch.from_numpy(self.repeats)
        counts = r.floor().long() + (torch.rand(self.n, generator=g, dtype=torch.float64) < r - r.floor()).long()
        order = torch.repeat_interleave(torch.arange(self.n), counts)
        order = order[torch.randperm(len(order), generator=g)].tolist()
        length = self.epoch_length
        return (order * (length // len(order) + 1))[:length]

    def order(self) -> list[int]:
        """This process's samples of the epoch, in order (whole batches only when shared)."""
        perm = self.permutation()
        if self.world == 1:
            return perm
        b = self.batch_size
        batches = [perm[i:i + b] for i in range(0, len(perm) - b + 1, b)]
        return [i for batch in batches[self.rank::self.world] for i in batch]

    def __iter__(self):
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return len(self.order()) - self.start


def collate(samples: list[dict]) -> dict:
    """Stack tensors and arrays of equal shape; keep everything else as lists."""
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if isinstance(vals[0], torch.Tensor) and all(v.shape == vals[0].shape for v in vals):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], np.ndarray) and vals[0].dtype != object and all(
                v.shape == vals[0].shape for v in vals):
            out[key] = torch.from_numpy(np.stack(vals))
        else:
            out[key] = vals
    return out
