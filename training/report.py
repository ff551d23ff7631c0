"""Metrics and pictures for a model on a split: shared by `train` (its run report) and `evaluate`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a workstation's SSH session or in CI
import matplotlib.pyplot as plt
import numpy as np

from edge.vision.emotions import EMOTIONS


def classification_report(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(EMOTIONS)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(EMOTIONS):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": int(cm[i].sum()),
        }
    return {
        "accuracy": round(float(np.trace(cm) / max(cm.sum(), 1)), 4),
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "samples": int(cm.sum()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def markdown_table(report: dict) -> str:
    """The per-class table as Markdown, the form README and run folders show it in."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, c in report["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    lines.append(
        f"| **accuracy** | | {report['accuracy']:.4f} | macro {report['macro_f1']:.3f} | {report['samples']} |"
    )
    return "\n".join(lines) + "\n"


def plot_confusion(report: dict, path: Path, title: str) -> None:
    """Row-normalised confusion matrix, counts in each cell: recall per class reads off the diagonal."""
    cm = np.asarray(report["confusion_matrix"], dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {report['accuracy']:.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history_csvs: list[Path], path: Path) -> None:
    """Loss and accuracy per epoch, training against validation, from Keras' CSVLogger files: one
    per training stage (a run started from another run's model), earliest first, drawn end to end
    with a dotted line where a stage begins."""
    rows: list[dict[str, str]] = []
    starts: list[int] = []
    for history_csv in history_csvs:
        starts.append(len(rows))
        with history_csv.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    epochs = list(range(1, len(rows) + 1))
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, [float(r[key]) for r in rows], label="train")
        ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label="validation")
        for start in starts[1:]:
            ax.axvline(start + 0.5, color="gray", linestyle=":", label="next stage" if start == starts[1] else None)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_evaluation(report: dict, folder: Path, stem: str, title: str) -> None:
    """The files one evaluation leaves behind: JSON, Markdown table, per-class CSV, confusion PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{stem}_per_class.md").write_text(markdown_table(report))
    with (folder / f"{stem}_per_class.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for name, c in report["per_class"].items():
            writer.writerow([name, c["precision"], c["recall"], c["f1"], c["support"]])
    plot_confusion(report, folder / f"{stem}_confusion.png", title)
