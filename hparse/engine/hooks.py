"""Trainer hooks: what happens around the training loop, each in its own place (after detectron2's hooks).

A hook may implement any of ``before_train``, ``after_forward`` (returns extra named losses), ``after_step``,
``after_epoch``, ``before_save`` and ``after_train``; a hook with a ``state_key`` has its ``state_dict`` stored
in every checkpoint under that key, so resuming stays exact.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..io.atomic import write_text_atomic
from .optim import build_optimizer

log = logging.getLogger("hparse.train")


class Hook:
    state_key: str | None = None

    def before_train(self, trainer) -> None:
        pass

    def after_forward(self, trainer, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        return {}

    def after_step(self, trainer, losses: dict[str, torch.Tensor]) -> None:
        pass

    def after_epoch(self, trainer) -> None:
        pass

    def before_save(self, trainer) -> None:
        pass

    def after_train(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def resume_from(self, ck: dict, path) -> None:
        """Restore this hook's state from a checkpoint (a stateful hook missing from it starts afresh)."""
        if self.state_key is None:
            return
        if self.state_key in ck:
            self.load_state_dict(ck[self.state_key])
        else:
            log.warning("%s has no %s state; it starts afresh", path, self.state_key)


class TensorBoardHook(Hook):
    """Training losses and learning rate per step (``<run>/tb``); validation scalars are added by
    :class:`ValidationHook` through ``trainer.writer``."""

    def before_train(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if trainer.rank == 0:
            trainer.writer = SummaryWriter(str(trainer.out / "tb"), purge_step=trainer.step or None)

    def after_step(self, trainer, losses) -> None:
        w = trainer.writer
        if w is None:
            return
        w.add_scalar("train/loss", trainer.last_loss, trainer.step)
        w.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)
        for k, v in losses.items():
            w.add_scalar(f"train/{k}", float(v), trainer.step)

    def after_train(self, trainer) -> None:
        if trainer.writer is not None:
            trainer.writer.close()


class CheckpointHook(Hook):
    """``last.pt`` every ``checkpoint_every`` steps and after every epoch."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, trainer, losses) -> None:
        if trainer.step % self.every == 0:
            trainer.save("last.pt")

    def after_epoch(self, trainer) -> None:
        trainer.save("last.pt")


class ValidationHook(Hook):
    """Every ``val_every`` epochs (and after the last): run the config's evaluators on the validation split,
    append the scores to ``metrics.jsonl`` and the history, log them, and keep ``best.pt`` by ``best_metric``."""

    def __init__(self, reader, evaluators: list, best_metric: str, every: int, progress: bool = True):
        self.reader, self.evaluators, self.best_metric = reader, evaluators, best_metric
        self.every, self.progress = every, progress

    def before_train(self, trainer) -> None:
        """Cut ``metrics.jsonl`` back to the records of the checkpoint the run starts from (its history): a
        validation written after that checkpoint, by a run interrupted before the next one, is redone."""
        path = trainer.out / "metrics.jsonl"
        if path.is_file() and getattr(trainer, "rank", 0) == 0:
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in trainer.history))

    def after_epoch(self, trainer) -> None:
        if trainer.epoch % self.every == 0 or trainer.epoch == trainer.epochs:
            self.validate(trainer)

    def validate(self, trainer) -> dict:
        from ..evaluation import best_metric_value
        from .evaluate import evaluate_model, outputs_for
        from .inference import make_predictor

        model = trainer.model
        pred = make_predictor(model, trainer.cfg["eval"], trainer.device)
        results = evaluate_model(outputs_for(pred, self.evaluators), self.reader, self.evaluators,
                                 progress=self.progress)
        model.train()
        summary = flat_summary(results)
        rec = {"epoch": trainer.epoch, "step": trainer.step, **summary}
        trainer.history.append(rec)
        for k, v in summary.items():
            if trainer.writer is not None and isinstance(v, float) and math.isfinite(v):
                trainer.writer.add_scalar(f"val/{k}", v, trainer.step)
        if trainer.rank == 0:
            with open(trainer.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        value = best_metric_value(results, self.best_metric)
        if value > trainer.best:
            trainer.best = value
            trainer.save("best.pt")
        log.info("epoch %d: val %s %.2f (best %.2f)", trainer.epoch, self.best_metric, 100 * value,
                 100 * trainer.best)
        return rec


def flat_summary(results: dict) -> dict[str, float]:
    """One flat record of every evaluator's summary: the semantic scores' keys as they are (``miou``...),
    the others prefixed by their evaluator (``instance/ap_p_vol``)."""
    out = {}
    for name, res in results.items():
        out.update({(k if name == "semantic" else f"{name}/{k}"): v for k, v in res.summary().items()})
    return out


CURVE_METRICS = ("miou", "pixel_acc", "mean_acc", "instance/APp_vol", "instance/PCP50", "instance/APr_vol",
                 "instance/APh", "instance/miou", "box/AP50")   # plotted when validated, else the first three


class CurvesHook(Hook):
    """``val_curves.png`` after each validation (and the adversarial losses' plot when there are any)."""

    def __init__(self, adversarial_plot=None):
        self.adversarial_plot = adversarial_plot

    def after_epoch(self, trainer) -> None:
        from ..viz.plots import curves_plot

        if trainer.rank != 0 or not trainer.history or trainer.history[-1]["epoch"] != trainer.epoch:
            return
        try:
            keys = [k for k in CURVE_METRICS if k in trainer.history[0]] or [
                k for k, v in trainer.history[0].items() if k not in ("epoch", "step") and isinstance(v, float)][:3]
            curves_plot({k: ([h["epoch"] for h in trainer.history], [100 * h[k] for h in trainer.history])
                         for k in keys}, trainer.out / "val_curves.png", title="validation", ylabel="%",
                        xlabel="epoch")
            if self.adversarial_plot is not None:
                self.adversarial_plot(trainer)
        except Exception as e:  # noqa: BLE001 - a plot must never end a training run
            log.warning("could not plot curves: %s", e)


# -- adversarial training ------------------------------------------------------------------------

def _uniform(seed: int, step: int) -> float:
    """A uniform draw in [0, 1) that depends only on ``(seed, step)`` (splitmix64 hash)."""
    m = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E019) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def _average_gradients(module: nn.Module) -> None:
    """Average ``module``'s gradients over the processes (a module outside DistributedDataParallel)."""
    import torch.distributed as dist

    from . import distributed

    if distributed.world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= distributed.world_size()


class AdversarialHook(Hook):
    """Trains a model's critic (its training companion, e.g. discriminators) beside it: after the model's
    forward, the critic's optimiser steps on its loss, then the model's adversarial loss joins its losses.

    ``train.adversarial``: the critic's options (``hparse.models.adversarial``) plus ``optimizer`` (the
    critic's optimiser; default Adam, lr 2e-4, betas (0.9, 0.999), weight decay 1e-4 as in the adversarial
    parsing paper; its learning rate follows the trainer's schedule factor) and ``d_step_prob`` (the authors'
    code quirk 0.1: the critic steps on a random share of iterations, drawn from ``(seed, step)`` so a resumed
    run draws the same). Per-step logs go to TensorBoard ``train/adv/*`` and ``<run>/adversarial.jsonl`` (the
    paper's Fig. 2 view is plotted from it).
    """

    state_key = "adversarial"
    HOOK_OPTIONS = ("optimizer", "d_step_prob")

    def __init__(self, critic: nn.Module, cfg: dict, trainer):
        from ..viz.plots import ADVERSARIAL_LOG

        if trainer.accumulate != 1:
            raise ConfigError("train.accumulate must be 1 for adversarial training (D and G alternate per batch)")
        self.critic = critic.to(trainer.device).train()
        self.critic.configure(**{k: v for k, v in cfg.items() if k not in self.HOOK_OPTIONS})
        self.d_step_prob = float(cfg["d_step_prob"])
        self.critic.requires_grad_(True)  # build_optimizer skips frozen parameters
        self.optimizer = build_optimizer(self.critic, cfg["optimizer"])
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.seed, self.log_path = trainer.seed, trainer.out / ADVERSARIAL_LOG
        self.pending: list[dict] = []
        self.logs: dict[str, float] = {}

    def d_should_step(self, step: int) -> bool:
        if self.d_step_prob >= 1:
            return True
        return self.d_step_prob > 0 and _uniform(self.seed, int(step)) < self.d_step_prob

    def after_forward(self, trainer, batch, outputs) -> dict[str, torch.Tensor]:
        image = trainer.model.normalize(batch["image"])
        pairs = self.critic.pairs(outputs, batch["label"], image)
        do_step = self.d_should_step(trainer.step)
        self.critic.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(do_step), torch.autocast(trainer.device.type, enabled=trainer.amp):
            d_loss, logs = self.critic.d_loss(pairs)
        if do_step:
            factor = trainer.lr_lambda(trainer.step)
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor
            trainer.scaler.scale(d_loss).backward()
            _average_gradients(self.critic)
            trainer.scaler.step(self.optimizer)
        with torch.autocast(trainer.device.type, enabled=trainer.amp):
            g_loss, g_logs = self.critic.g_loss(pairs)
        self.logs = {"d_step": float(do_step), **logs, **g_logs}
        return {"adversarial": g_loss}

    def after_step(self, trainer, losses) -> None:
        for k, v in self.logs.items():
            if trainer.writer is not None:
                trainer.writer.add_scalar(f"train/adv/{k}", v, trainer.step)
        if trainer.rank != 0:
            return
        rec: dict = {"step": trainer.step, "epoch": trainer.epoch, "d_step": self.logs.get("d_step", 1.0)}
        for key, v in self.logs.items():
            if "/" in key:
                name, k = key.split("/", 1)
                rec.setdefault(name, {})[k] = v
        self.pending.append(rec)

    def before_save(self, trainer) -> None:
        """Append the per-step records up to this checkpoint (a resumed run may repeat steps after a crash;
        readers keep the last record of a step)."""
        if self.pending:
            with open(self.log_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.pending)
            self.pending = []

    def plot(self, trainer) -> None:
        from ..viz.plots import adversarial_curves_plot, read_adversarial_log

        if Path(self.log_path).is_file():
            adversarial_curves_plot(read_adversarial_log(trainer.out), trainer.out / "adversarial.png",
                                    self.critic.gan_loss, title=trainer.out.name)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "critic": self.critic.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])

    def resume_from(self, ck: dict, path) -> None:
        """As :meth:`Hook.resume_from`; checkpoints of older versions hold the critic's weights among the model's
        (the critic knows where)."""
        state = dict(ck.get(self.state_key) or {})
        if "critic" not in state:
            state["critic"] = self.critic.state_in_model_weights(ck["model"])
        if not state["critic"] or "optimizer" not in state:
            log.warning("%s has no discriminator state; the critic starts afresh", path)
            return
        self.load_state_dict(state)
