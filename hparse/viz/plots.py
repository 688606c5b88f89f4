"""Plots: confusion matrices, training curves and adversarial (GAN) convergence curves (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_plot(matrix: np.ndarray, class_names, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = ground truth) as a PNG."""
    from ..io.atomic import atomic_path

    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.45 * n + 3, 0.45 * n + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (% of ground-truth pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def curves_plot(series: dict[str, tuple[list, list]], path: str | Path, title: str = "", ylabel: str = "",
                xlabel: str = "step") -> Path:
    """Line plot of named (x, y) series."""
    from ..io.atomic import atomic_path

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- adversarial training (MMAN)

ADVERSARIAL_LOG = "adversarial.jsonl"  # per-step D/G losses, written by hparse.engine.adversarial


def read_adversarial_log(run_dir: str | Path) -> list[dict]:
    """Per-step records of ``run_dir/adversarial.jsonl`` sorted by step; when a resumed run repeated steps,
    the last record of each step wins."""
    path = Path(run_dir) / ADVERSARIAL_LOG
    if not path.is_file():
        from ..errors import HParseError

        raise HParseError(f"{path}: no adversarial log (only runs of models with discriminators write one)")
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2:
        return y
    window = min(window, len(y))
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = (c[window:] - c[:-window]) / window
    head = c[1:window] / np.arange(1, window)  # growing window at the start
    return np.concatenate([head, out])


def adversarial_curves_plot(records: list[dict], path: str | Path, gan_loss: str | None = None,
                            smooth: int | None = None, title: str = "") -> Path:
    """MMAN Fig. 2-style convergence plot: one panel per discriminator with LossD(real), LossD(fake) and
    LossG over iterations (moving average over ``smooth`` steps, default ~1/50 of the run; raw values
    faint behind). A dashed line marks the value every curve reaches when D cannot tell real from fake
    (``bce``: ln 2; ``lsgan``: 0.25); "poor convergence" shows as D losses falling to 0 while LossG grows.
    """
    from ..io.atomic import atomic_path

    plt = _plt()
    names = [k for k in records[0] if isinstance(records[0][k], dict)] if records else []
    if not names:
        raise ValueError("no discriminator records to plot")
    steps = np.array([r["step"] for r in records], dtype=np.float64)
    window = smooth if smooth is not None else max(1, len(records) // 50)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
    curves = (("d_real", "LossD(real)", "tab:blue"), ("d_fake", "LossD(fake)", "tab:orange"),
              ("g", "LossG", "tab:green"))
    for ax, name in zip(axes[0], names):
        for key, label, colour in curves:
            y = np.array([r.get(name, {}).get(key, np.nan) for r in records], dtype=np.float64)
            if np.isnan(y).all():
                continue
            ax.plot(steps, y, color=colour, alpha=0.2, linewidth=0.8)
            ok = ~np.isnan(y)
            ax.plot(steps[ok], _moving_average(y[ok], window), color=colour, label=label)
        if gan_loss in ("bce", "lsgan"):
            ax.axhline(np.log(2) if gan_loss == "bce" else 0.25, color="grey", linestyle="--", linewidth=0.8,
                       label="D at chance")
        ax.set_title(f"{name} D")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss" + (f" ({gan_loss})" if gan_loss else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def plot_adversarial_curves(run_dir: str | Path, out_png: str | Path, smooth: int | None = None) -> Path:
    """Render :func:`adversarial_curves_plot` for a training run folder (its ``adversarial.jsonl``; the GAN
    loss type is read from the run's ``config.yaml`` when present)."""
    run_dir = Path(run_dir)
    records = read_adversarial_log(run_dir)
    gan_loss = "bce"
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        gan_loss = ((cfg.get("train") or {}).get("adversarial") or {}).get("gan_loss", "bce")
    return adversarial_curves_plot(records, out_png, gan_loss, smooth, title=run_dir.name)


def score_table_image(values: np.ndarray, rows, cols, title: str = "") -> np.ndarray:
    """A (rows, cols) table of scores in [0, 1] as an RGB grouped bar chart: one group per row, one bar per
    column (e.g. CNIF's fusion gates per node and source, the paper's Fig. 4c; 0 = no such source)."""
    plt = _plt()
    g = np.asarray(values, dtype=np.float32)
    n, k = g.shape
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 2), 3.2))
    x = np.arange(n)
    colours = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
    for j, name in enumerate(cols):
        ax.bar(x + (j - (k - 1) / 2) * width, g[:, j], width=width, label=name, color=colours[j % len(colours)])
    ax.set_xticks(x, list(rows)[:n] if rows else [str(i) for i in x], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=k, loc="upper right")
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb
