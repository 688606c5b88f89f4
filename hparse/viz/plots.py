"""Plots: confusion matrices and training curves (matplotlib, headless)."""

from __future__ import annotations

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


def curves_plot(series: dict[str, tuple[list, list]], path: str | Path, title: str = "", ylabel: str = "") -> Path:
    """Line plot of named (x, y) series."""
    from ..io.atomic import atomic_path

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
