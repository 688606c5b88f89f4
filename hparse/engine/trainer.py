"""Training loop: config in, checkpoints, TensorBoard logs and validation scores out.

Exact resume: data order comes from a seeded per-epoch permutation, augmentation from a
per-sample generator seeded by ``(seed, epoch, index)``, and every checkpoint stores the
position inside the epoch, the optimiser, scheduler and RNG states. A run killed at any
point and resumed from its last checkpoint ends with the same weights as an uninterrupted
run (on the same machine and thread count).

A model with discriminators (``model.discriminators``, e.g. MMAN) trains adversarially: each
iteration steps D, then G (``adversarial.py``; options under ``train.adversarial``); the D
optimiser is checkpointed too, so resuming stays exact.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import config as C
from ..data.dataset import EpochSampler, ParsingDataset, collate
from ..data.readers import build_reader
from ..data.transforms import build_transforms
from ..errors import ConfigError
from ..io.atomic import atomic_path, write_text_atomic
from ..losses import build_loss
from ..models import build_model
from .adversarial import AdversarialTraining, generator_parameters, has_discriminators
from .checkpoint import load_checkpoint
from .evaluate import evaluate_predictor
from .predictor import Predictor

log = logging.getLogger("hparse.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int = 0, warmup_ratio: float = 0.1, power: float = 0.9) -> float:
    """Linear warm-up from ``warmup_ratio`` to 1, then poly decay ``(1 - step/total)^power``."""
    if step < warmup:
        return warmup_ratio + (1 - warmup_ratio) * step / warmup
    return max(0.0, 1 - step / max(1, total)) ** power


def make_lr_lambda(cfg: dict, total: int, iters_per_epoch: int):
    """The schedule factor of ``train``: ``lr_policy: poly`` (default; :func:`lr_factor`) or ``step``
    (the same warm-up, then ``lr_gamma ** (number of lr_step_epochs passed)``, MMAN's "divided by 10 after
    15 epochs": ``lr_step_epochs: [15]``)."""
    policy = cfg.get("lr_policy", "poly")
    warm, ratio = int(cfg.get("warmup_iters", 0)), float(cfg.get("warmup_ratio", 0.1))
    if policy == "poly":
        power = float(cfg.get("poly_power", 0.9))
        return lambda s: lr_factor(s, total, warm, ratio, power)
    if policy == "step":
        milestones = [int(e) * iters_per_epoch for e in cfg.get("lr_step_epochs", [])]
        gamma = float(cfg.get("lr_gamma", 0.1))

        def step_factor(s: int) -> float:
            if s < warm:
                return lr_factor(s, total, warm, ratio)
            return gamma ** sum(s >= m for m in milestones)
        return step_factor
    raise ConfigError(f"train.lr_policy: unknown {policy!r} (poly, step)")


def build_optimizer(model, cfg: dict) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW over ``model`` (a module or a list of parameters); norm weights and biases
    (1-d parameters) get no weight decay unless ``no_decay_norm_bias: false``."""
    kind = cfg.get("optimizer", "sgd").lower()
    lr, wd = float(cfg.get("lr", 0.01)), float(cfg.get("weight_decay", 5e-4))
    decay, no_decay = [], []
    for p in (model.parameters() if isinstance(model, torch.nn.Module) else model):
        if p.requires_grad:
            (no_decay if p.ndim <= 1 and cfg.get("no_decay_norm_bias", True) else decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    if kind in ("adam", "adamw"):
        betas = tuple(cfg.get("betas", (0.9, 0.999)))
        return (torch.optim.AdamW if kind == "adamw" else torch.optim.Adam)(groups, lr=lr, betas=betas)
    raise ConfigError(f"train.optimizer: unknown {kind!r} (sgd, adam, adamw)")


def make_predictor(model, meta, cfg: dict, device, tta: bool = False, channels_last: bool = False) -> Predictor:
    ev, data = cfg.get("eval", {}), cfg.get("data", {})
    scales = ev.get("tta_scales", [0.75, 1.0, 1.25]) if tta else ev.get("scales", [1.0])
    return Predictor(model, meta.flip_permutation(), long_side=int(ev.get("long_side", 512)),
                     scales=scales, flip=tta or bool(ev.get("flip", False)),
                     mean=data.get("mean", (0.485, 0.456, 0.406)), std=data.get("std", (0.229, 0.224, 0.225)),
                     average=ev.get("average", "logits"), device=device, channels_last=channels_last)


class Trainer:
    def __init__(self, cfg: dict, out_dir: str | Path | None = None, device: str | None = None,
                 progress: bool = True):
        self.cfg = cfg
        t, d = cfg.get("train", {}), cfg.get("data", {})
        self.out = Path(out_dir or t.get("out_dir") or Path("runs") / cfg["name"])
        self.device = torch.device(device or t.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress
        self.seed = int(t.get("seed", 0))
        seed_everything(self.seed)
        if d.get("root") is None:
            raise ConfigError("data.root is not set (give data.root=PATH on the command line)")
        self.train_reader = build_reader(d["layout"], d["root"], d.get("train_split", "train"),
                                         label_set=d.get("label_set"))
        self.meta = self.train_reader.meta
        self.val_reader = (build_reader(d["layout"], d["root"], d["val_split"], label_set=d.get("label_set"))
                           if d.get("val_split") else None)
        self.dataset = ParsingDataset(self.train_reader, build_transforms(d.get("train_transforms", []), self.meta),
                                      seed=self.seed)
        self.model = build_model(cfg["model"], self.meta.num_classes).to(self.device)
        if t.get("init_from"):  # warm start: weights only, fresh optimiser and schedule
            state = load_checkpoint(t["init_from"])["model"]
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
        self.loss = build_loss(cfg.get("loss", [{"type": "ce"}])).to(self.device)
        self.optimizer = build_optimizer(generator_parameters(self.model), t)   # all of them without a D
        self.batch_size = int(t.get("batch_size", 8))
        self.accumulate = int(t.get("accumulate", 1))
        self.epochs = int(t.get("epochs", 10))
        self.iters_per_epoch = len(self.dataset) // (self.batch_size * self.accumulate)
        if self.iters_per_epoch == 0:
            raise ConfigError(f"dataset has {len(self.dataset)} samples, fewer than one step of "
                              f"batch_size*accumulate = {self.batch_size * self.accumulate}")
        self.total_steps = self.epochs * self.iters_per_epoch
        self.lr_lambda = make_lr_lambda(t, self.total_steps, self.iters_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_lambda)
        self.amp = bool(t.get("amp", True)) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # models with discriminators (MMAN) train adversarially: D step, then G (engine/adversarial.py)
        self.adversarial = None
        if has_discriminators(self.model):
            if self.accumulate != 1:
                raise ConfigError("train.accumulate must be 1 for adversarial training (D and G alternate per batch)")
            self.adversarial = AdversarialTraining(self.model, t.get("adversarial"), seed=self.seed,
                                                   lr_lambda=self.lr_lambda, scaler=self.scaler, amp=self.amp,
                                                   device_type=self.device.type)
        self.sampler = EpochSampler(len(self.dataset), self.seed)
        self.checkpoint_every = int(t.get("checkpoint_every", 100))
        self.val_every = int(t.get("val_every", 1))
        self.workers = int(t.get("workers", 2))
        self.max_steps = t.get("max_steps")  # stop early (tests, smoke runs); keeps the schedule
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, -1.0
        self.history: list[dict] = []
        self._stop = False

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "best": self.best, "rng": torch.get_rng_state(), "history": self.history,
                "config": self.cfg, "label_set": self.meta.name,
                **({"adversarial": self.adversarial.state_dict()} if self.adversarial else {})}

    def save(self, name: str, state: dict | None = None) -> Path:
        path = self.out / name
        if self.adversarial is not None:
            self.adversarial.flush(self.out)  # per-step D/G losses up to this checkpoint
        with atomic_path(path) as tmp:
            torch.save(state or self.state(), tmp)
        return path

    def resume(self, path: str | Path) -> None:
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        if self.adversarial is not None:
            if "adversarial" in ck:
                self.adversarial.load_state_dict(ck["adversarial"])
            else:
                log.warning("%s has no discriminator optimiser state; it starts afresh", path)
        self.epoch, self.batch_in_epoch, self.step = ck["epoch"], ck["batch_in_epoch"], ck["step"]
        self.best, self.history = ck["best"], ck["history"]
        torch.set_rng_state(ck["rng"])
        log.info("resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)

    # -- loop ---------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.batch_size)
        self.dataset.set_epoch(self.epoch)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                          num_workers=self.workers, collate_fn=collate, drop_last=True,
                          persistent_workers=False, generator=torch.Generator().manual_seed(self.seed),
                          worker_init_fn=_limit_worker_threads)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _handle_signal(self, signum, frame):
        log.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        self._stop = True

    def train(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "config.yaml", C.dump(self.cfg))
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.model.train()
        try:
            while self.epoch < self.epochs and not self._stop:
                self._train_epoch(writer)
                if self._stop or self._reached_max():
                    break
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                validating = self.epoch % self.val_every == 0 or self.epoch == self.epochs
                if validating:
                    self.validate(writer)
                self.save("last.pt")
                if validating:
                    self._plot_curves()  # after save: it flushes the adversarial log the plot reads
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            writer.close()
        if self._stop or self._reached_max():
            self.save("last.pt")
        return self.history[-1] if self.history else {}

    def _plot_curves(self) -> None:
        """Validation curves (and, for adversarial runs, the D/G losses as in MMAN's Fig. 2) as PNGs."""
        from ..viz.plots import ADVERSARIAL_LOG, adversarial_curves_plot, curves_plot, read_adversarial_log

        try:
            if self.history:
                keys = ("miou", "pixel_acc", "mean_acc")
                curves_plot({k: ([h["epoch"] for h in self.history], [100 * h[k] for h in self.history])
                             for k in keys if k in self.history[0]}, self.out / "val_curves.png",
                            title="validation", ylabel="%", xlabel="epoch")
            if self.adversarial is not None and (self.out / ADVERSARIAL_LOG).is_file():
                adversarial_curves_plot(read_adversarial_log(self.out), self.out / "adversarial.png",
                                        self.adversarial.gan_loss, title=self.out.name)
        except Exception as e:  # noqa: BLE001 - a plot must never end a training run
            log.warning("could not plot curves: %s", e)

    def _reached_max(self) -> bool:
        return self.max_steps is not None and self.step >= int(self.max_steps)

    def _train_epoch(self, writer) -> None:
        loader = self._loader()
        bar = tqdm(total=self.iters_per_epoch, initial=self.batch_in_epoch // self.accumulate,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=not self.progress, dynamic_ncols=True)
        micro, t0 = 0, time.time()
        for batch in loader:
            if self.batch_in_epoch // self.accumulate >= self.iters_per_epoch:
                break
            batch = self._to_device(batch)
            with torch.autocast(self.device.type, enabled=self.amp):
                outputs = self.model(batch["image"])
                total, parts = self.loss(outputs, batch)
            adv_logs = None
            if self.adversarial is not None:  # D step now; G's adversarial term joins its loss
                g_adv, adv_logs = self.adversarial.step(outputs, batch, self.step)
                total = total + g_adv
            if not torch.isfinite(total):
                raise FloatingPointError(f"loss is {total.item()} at step {self.step}; lower train.lr")
            self.scaler.scale(total / self.accumulate).backward()
            self.batch_in_epoch += 1
            micro += 1
            if micro % self.accumulate:
                continue
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            lr = self.optimizer.param_groups[0]["lr"]
            writer.add_scalar("train/loss", total.item(), self.step)
            writer.add_scalar("train/lr", lr, self.step)
            for k, v in parts.items():
                writer.add_scalar(f"train/{k}", v.item(), self.step)
            if adv_logs is not None:
                for k, v in adv_logs.items():
                    writer.add_scalar(f"train/adv/{k}", v, self.step)
                self.adversarial.record(self.step, self.epoch, adv_logs)
            bar.set_postfix(loss=f"{total.item():.3f}", lr=f"{lr:.2e}",
                            ips=f"{micro * self.batch_size / (time.time() - t0):.1f}")
            bar.update(1)
            if self.step % self.checkpoint_every == 0 or self._stop:
                self.save("last.pt")
            if self._stop or self._reached_max():
                break
        bar.close()

    def validate(self, writer=None) -> dict:
        if self.val_reader is None:
            return {}
        self.model.eval()
        pred = make_predictor(self.model, self.meta, self.cfg, self.device)
        _, scores = evaluate_predictor(pred, self.val_reader, self.cfg.get("eval", {}).get("convention", "ce2p"),
                                       progress=self.progress)
        self.model.train()
        rec = {"epoch": self.epoch, "step": self.step, **scores.summary()}
        self.history.append(rec)
        if writer is not None:
            for k, v in scores.summary().items():
                if isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(f"val/{k}", v, self.step)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if rec["miou"] > self.best:
            self.best = rec["miou"]
            self.save("best.pt")
        log.info("epoch %d: val mIoU %.2f (best %.2f)", self.epoch, 100 * rec["miou"], 100 * self.best)
        return rec


def _limit_worker_threads(_):
    torch.set_num_threads(1)
