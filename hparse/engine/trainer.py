"""Training loop: config in, checkpoints, TensorBoard logs and validation scores out.

The loop hands each batch (images and targets) to the model and sums the named losses it returns, so any
model of the contract -- a semantic parser or a detector that assigns its targets inside ``forward`` -- trains
the same way. Everything around the loop is a hook (:mod:`hparse.engine.hooks`): TensorBoard, checkpoints,
validation through the config's evaluators with ``best.pt`` by ``eval.best_metric``, curve plots, and
adversarial training when the model has a training companion (discriminators).

Exact resume: data order comes from a seeded per-epoch permutation, augmentation from a per-sample generator
seeded by ``(seed, epoch, index)``, and every checkpoint stores the position inside the epoch, the optimiser,
scheduler, RNG and hook states. A run killed at any point and resumed from its last checkpoint ends with the
same weights as an uninterrupted run (on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import config as C
from ..data.dataset import EpochSampler, MixedReader, ParsingDataset, class_presence, repeat_factors
from ..data.detection import build_collate
from ..data.readers import build_reader
from ..data.transforms import build_transforms
from ..devices import resolve_device
from ..errors import ConfigError, HParseError
from ..evaluation import build_evaluators, check_best_metric
from ..io.atomic import atomic_path, remove_stale_temps, write_text_atomic
from ..models import build_model
from . import distributed
from .checkpoint import load_checkpoint, load_weights
from .hooks import AdversarialHook, CheckpointHook, CurvesHook, TensorBoardHook, ValidationHook
from .optim import build_optimizer, make_lr_lambda

log = logging.getLogger("hparse.train")

# settings that may change between a run and its resumption without changing what it computes
RESUMABLE_CHANGES = ("name", "description", "eval", "train.device", "train.workers", "train.max_steps",
                     "train.out_dir", "train.checkpoint_every", "train.val_every")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (a sub-dict compared key by key)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, key + ".")
        elif a != b:
            out.append(key)
    return out


class Trainer:
    def __init__(self, cfg: dict, out_dir: str | Path | None = None, device: str | None = None,
                 progress: bool = True):
        self.cfg = cfg
        t, d = cfg["train"], cfg["data"]
        self.out = Path(out_dir or t["out_dir"] or Path("runs") / cfg["name"])
        self.device = torch.device(distributed.setup(resolve_device(device or t["device"])))
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.progress = progress
        self.seed = int(t["seed"])
        seed_everything(self.seed)
        if d["root"] is None:
            raise ConfigError("data.root is not set (give data.root=PATH on the command line)")
        # data.train_data: a derived copy of the training split (e.g. bystanders marked); validation reads data.root
        src = d["train_data"] or {"layout": d["layout"], "root": d["root"], "split": d["train_split"]}
        self.train_reader = build_reader(src["layout"], src["root"], src["split"], label_set=d["label_set"])
        if d["extra_train"]:
            extra = [build_reader(e["layout"], e["root"], e["split"], label_set=self.train_reader.meta.name)
                     for e in d["extra_train"]]
            self.train_reader = MixedReader([self.train_reader, *extra])
        self.meta = self.train_reader.meta
        self.dataset = ParsingDataset(self.train_reader, build_transforms(d["train_transforms"], self.meta),
                                      seed=self.seed)
        self.model = build_model(cfg["model"], self.meta, loss=cfg.get("loss")).to(self.device)
        if t["init_from"]:  # warm start: weights only, fresh optimiser and schedule
            load_weights(self.model, t["init_from"], self.meta, t["init_keys"])
        self.train_model = self._parallel(self.model, t)
        # how samples become a batch: stacked (default) or padded with per-image sizes and target lists (detectors)
        self.collate = build_collate(getattr(self.model, "collate", "default"),
                                     getattr(self.model, "size_divisibility", 32))
        self.optimizer = build_optimizer(self.model, t)
        self.batch_size, self.accumulate, self.epochs = int(t["batch_size"]), int(t["accumulate"]), int(t["epochs"])
        self.global_batch = self.batch_size * self.accumulate * self.world
        self.sampler = EpochSampler(len(self.dataset), self.seed, batch_size=self.batch_size, rank=self.rank,
                                    world=self.world, repeats=self._repeat_factors(t["repeat_factor_threshold"]))
        self.iters_per_epoch = self.sampler.epoch_length // self.global_batch
        if self.iters_per_epoch == 0:
            raise ConfigError(f"dataset has {len(self.dataset)} samples, fewer than one step of "
                              f"batch_size x accumulate x processes = {self.global_batch}")
        self.total_steps = self.epochs * self.iters_per_epoch
        self.lr_lambda = make_lr_lambda(t, self.total_steps, self.iters_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_lambda)
        self.amp = bool(t["amp"]) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if t["amp_dtype"] == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.workers = int(t["workers"])
        self.max_steps = t["max_steps"]  # stop early (tests, smoke runs); keeps the schedule
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, float("-inf")
        self.history: list[dict] = []
        self.last_loss, self._step_loss = float("nan"), 0.0
        self.writer = None
        self._stop = False
        self.hooks = self._build_hooks()

    def _repeat_factors(self, threshold: float | None) -> np.ndarray | None:
        """``train.repeat_factor_threshold``: each training image's repeat factor from the classes it holds."""
        if threshold is None:
            return None
        present = class_presence(self.train_reader, self.meta.num_classes, progress=self.progress)
        r = repeat_factors(present, threshold)
        log.info("repeat-factor sampling (threshold %g): %d of %d images repeated, epoch %.0f samples",
                 threshold, int((r > 1).sum()), len(r), r.sum())
        return r

    def _parallel(self, model, t: dict):
        """The module the loop calls: ``model`` itself, or wrapped in DistributedDataParallel when launched
        with several processes (SyncBatchNorm first with ``train.sync_bn``, GPUs only)."""
        if t["sync_bn"] and (self.world == 1 or self.device.type != "cuda"):
            raise ConfigError("train.sync_bn needs several GPU processes (torchrun on CUDA devices)")
        if self.world == 1:
            return model
        if t["sync_bn"]:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                         find_unused_parameters=t["find_unused_parameters"])

    def _build_hooks(self) -> list:
        t, d, ev = self.cfg["train"], self.cfg["data"], self.cfg["eval"]
        hooks = [TensorBoardHook()]
        companion = self.model.training_companion()
        adversarial = AdversarialHook(companion, t["adversarial"], self) if companion is not None else None
        if adversarial is not None:
            hooks.append(adversarial)
        if d["val_split"]:
            reader = build_reader(d["layout"], d["root"], d["val_split"], label_set=d["label_set"])
            evaluators = build_evaluators(ev["evaluators"], self.meta)
            check_best_metric(evaluators, ev["best_metric"])   # before training, not after the first epoch
            hooks.append(ValidationHook(reader, evaluators, ev["best_metric"], int(t["val_every"]), self.progress))
        hooks.append(CheckpointHook(int(t["checkpoint_every"])))
        hooks.append(CurvesHook(adversarial.plot if adversarial is not None else None))
        return hooks

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "best": self.best, "rng": torch.get_rng_state(), "history": self.history,
                "world_size": self.world,
                "config": self.cfg, "label_set": self.meta.name,
                **{h.state_key: h.state_dict() for h in self.hooks if h.state_key}}

    def save(self, name: str) -> Path:
        """Write a checkpoint (every process takes part; the first one writes)."""
        path, state = self.out / name, self.state()
        if self.rank == 0:
            for h in self.hooks:
                h.before_save(self)
            write_checkpoint(state, path)
        distributed.barrier()
        return path

    def start(self, resume: str | Path | None = None, auto_resume: bool = True, resume_anyway: bool = False) -> None:
        """Pick up where the run folder left off: ``resume`` (a checkpoint), else ``OUT/last.pt`` when
        ``auto_resume``; without auto-resume a run folder that holds checkpoints is refused, never replaced."""
        last = self.out / "last.pt"
        if resume is None and last.is_file():
            if not auto_resume:
                ck = load_checkpoint(last)
                raise HParseError(f"{self.out} holds a run (epoch {ck['epoch']} of "
                                  f"{ck['config']['train']['epochs']}); --no-auto-resume would replace its "
                                  "checkpoints: choose another --out or remove them first")
            resume = last
        if resume is not None:
            self.resume(resume, resume_anyway)

    def resume(self, path: str | Path, anyway: bool = False) -> None:
        ck = load_checkpoint(path)
        changed = [k for k in config_differences(C.migrate_legacy(ck["config"]), self.cfg)
                   if not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)]
        if ck.get("world_size", 1) != self.world:
            changed.append(f"number of processes ({ck.get('world_size', 1)} -> {self.world})")
        if changed and not anyway:
            raise HParseError(f"{path} was trained with another config ({', '.join(changed)} differ); resuming would "
                              "not continue that run: use another --out, or --resume-anyway")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        for h in self.hooks:
            h.resume_from(ck, path)
        self.epoch, self.batch_in_epoch, self.step = ck["epoch"], ck["batch_in_epoch"], ck["step"]
        self.best, self.history = ck["best"], ck["history"]
        torch.set_rng_state(ck["rng"])
        log.info("resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)

    # -- loop ---------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.batch_size)
        self.dataset.set_epoch(self.epoch)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                          num_workers=self.workers, collate_fn=self.collate, drop_last=True,
                          persistent_workers=False, generator=torch.Generator().manual_seed(self.seed),
                          worker_init_fn=_limit_worker_threads)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _handle_signal(self, signum, frame):
        log.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        self._stop = True

    def _reached_max(self) -> bool:
        return self.max_steps is not None and self.step >= int(self.max_steps)

    def train(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            for tmp in remove_stale_temps(self.out, time.time(), recursive=False):
                log.info("removed %s, left by an interrupted run", tmp)
            write_text_atomic(self.out / "config.yaml", C.dump(self.cfg))
        log.info("batch %d per process x %d accumulated x %d processes = %d per step; %d steps per epoch",
                 self.batch_size, self.accumulate, self.world, self.global_batch, self.iters_per_epoch)
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.model.train()
        for h in self.hooks:
            h.before_train(self)
        try:
            while self.epoch < self.epochs and not self._stop:
                self._train_epoch()
                if self._stop or self._reached_max():
                    break
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                for h in self.hooks:
                    h.after_epoch(self)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            for h in self.hooks:
                h.after_train(self)
        if self._stop or self._reached_max():
            self.save("last.pt")
        return self.history[-1] if self.history else {}

    def run_step(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """One forward/backward on a batch; steps the optimiser every ``accumulate`` batches and then returns
        the named losses (None in between)."""
        last_micro = (self.batch_in_epoch + 1) % self.accumulate == 0
        self._seed_batch()
        sync = contextlib.nullcontext() if last_micro or self.world == 1 else self.train_model.no_sync()
        with sync:
            with torch.autocast(self.device.type, enabled=self.amp, dtype=self.amp_dtype):
                out = self.train_model(batch)
                losses = dict(out)
                for h in self.hooks:
                    losses.update(h.after_forward(self, batch, getattr(out, "outputs", {})))
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise FloatingPointError(f"loss is {total.item()} at step {self.step} "
                                         f"({', '.join(f'{k} {float(v):.4g}' for k, v in losses.items())}); "
                                         "lower train.lr")
            self.scaler.scale(total / self.accumulate).backward()
        self._step_loss = self._step_loss + total.detach() / self.accumulate
        self.batch_in_epoch += 1
        if self.batch_in_epoch % self.accumulate:
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.last_loss = self._mean_over_processes(self._step_loss)
        self._step_loss = 0.0
        return {k: v.detach() for k, v in losses.items()}

    def _seed_batch(self) -> None:
        """Random draws inside the model (dropout) from ``(seed, epoch, batch)``, the batch counted over all
        processes: the same whatever the number of processes, and on resumption."""
        chunk = self.batch_in_epoch * self.world + self.rank
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, chunk]).generate_state(1)[0]))

    def _mean_over_processes(self, value: torch.Tensor) -> float:
        """The step's training loss: the mean over its accumulated batches and over the processes."""
        if self.world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return value.item()

    def _train_epoch(self) -> None:
        bar = tqdm(total=self.iters_per_epoch, initial=self.batch_in_epoch // self.accumulate,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=not self.progress, dynamic_ncols=True)
        seen, t0 = 0, time.time()
        for batch in self._loader():
            if self.batch_in_epoch // self.accumulate >= self.iters_per_epoch:
                break
            losses = self.run_step(self._to_device(batch))
            seen += self.batch_size
            if losses is None:
                continue
            for h in self.hooks:
                h.after_step(self, losses)
            bar.set_postfix(loss=f"{self.last_loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                            ips=f"{seen / (time.time() - t0):.1f}")
            bar.update(1)
            if self._stop:
                self.save("last.pt")
            if self._stop or self._reached_max():
                break
        bar.close()

    def validate(self) -> dict:
        """Run the validation hook now (e.g. after training elsewhere); {} without a validation split."""
        for h in self.hooks:
            if isinstance(h, ValidationHook):
                return h.validate(self)
        return {}


def write_checkpoint(state: dict, path: Path) -> None:
    """``torch.save`` through a temporary file: a failed write (a full disk) leaves the previous file whole
    and ends in one :class:`HParseError` line instead of torch's traceback."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as e:
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1][-80:]
        free = shutil.disk_usage(path.parent).free / 2**20
        raise HParseError(f"cannot write checkpoint {path} ({cause}; {free:.0f} MiB free on that disk); "
                          f"the previous {path.name}, if any, is intact") from e


def _limit_worker_threads(_):
    torch.set_num_threads(1)
