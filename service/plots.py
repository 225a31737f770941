"""The two PNGs of an artifact: training curves per epoch and the test-set confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np


def training_curves(history: dict[str, list[float]], title: str, path: Path) -> None:
    """Loss and accuracy per epoch: training (augmented batches) and test (monitoring only)."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label in (("loss", "train"), ("val_loss", "test")):
        if key in history:
            loss_ax.plot(epochs, history[key], marker="o", label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "test")):
        if key in history:
            acc_ax.plot(epochs, np.asarray(history[key]) * 100, marker="o", label=label)
    loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="%")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, title: str, path: Path) -> None:
    """10x10 counts, true digit by row, predicted by column; log colour scale so off-diagonal errors show."""
    fig, ax = plt.subplots(figsize=(6.5, 6), constrained_layout=True)
    shown = np.log1p(matrix.astype(float))
    ax.imshow(shown, cmap="Blues")
    for true in range(matrix.shape[0]):
        for pred in range(matrix.shape[1]):
            count = int(matrix[true, pred])
            if count:
                dark = shown[true, pred] > shown.max() * 0.6
                ax.text(pred, true, str(count), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")  # fmt: skip
    ticks = np.arange(matrix.shape[0])
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="true digit", title=title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
