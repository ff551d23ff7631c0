"""How a model holds up when faces look the way a Pi camera delivers them, not as FER-2013's clean crops.

Each degradation is applied to every face of a split, the same way for every model (seeded per face),
so two models' rows can be compared: ``python -m training robustness MODEL [MODEL ...] DATA``. The last
rows are the whole way a camera delivers a face: set into a scene, shot by a bad camera, found there by the
pipeline's own detector and cut out as the pipeline cuts it (training.framing), or cut wider, as crops from
another detector or a photo cropped by hand come, and that crop as ``EmotionClassifier.predict`` reframes it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from training.data import load_split
from training.evaluate import predict_file
from training.framing import in_a_frame
from training.report import classification_report, plt

# A face in, the face as the model would get it out; None when there is no face to give it (not found).
Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray | None]


def _small(side: int) -> Degradation:
    """A face of ``side`` px in the frame, enlarged to the model's input as the runtime does."""

    def apply(face: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, face.shape[::-1], interpolation=cv2.INTER_LINEAR)

    return apply


def _box(shift: float, scale: float) -> Degradation:
    """A detector box off by ``shift`` of the face's side in a random direction and ``scale`` in size."""

    def apply(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = face.shape[0]
        angle = rng.uniform(0, 2 * np.pi)
        zoom = 1 + scale * rng.choice((-1.0, 1.0))
        matrix = cv2.getRotationMatrix2D((n / 2, n / 2), 0, zoom)
        matrix[:, 2] += shift * n * np.array([np.cos(angle), np.sin(angle)])
        return cv2.warpAffine(face, matrix, (n, n), borderMode=cv2.BORDER_REFLECT)

    return apply


def _blur(sigma: float) -> Degradation:
    return lambda face, _rng: cv2.GaussianBlur(face, (0, 0), sigma)


def _noise(sigma: float) -> Degradation:
    return lambda face, rng: np.clip(face + rng.normal(0, sigma, face.shape), 0, 255).astype(np.uint8)


def _jpeg(quality: int) -> Degradation:
    def apply(face: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        _ok, data = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return np.asarray(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE))

    return apply


def _light(gain: float, gamma: float = 1.0, slope: float = 0.0) -> Degradation:
    """Dim (``gain``), bent (``gamma``) or uneven light: a ramp of ``slope`` across the face, random direction."""

    def apply(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = face.shape[0]
        ramp = np.linspace(-1, 1, n)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        light = gain * (1 + slope * gradient) * (face / 255.0) ** gamma
        return np.clip(255 * light, 0, 255).astype(np.uint8)

    return apply


DEGRADATIONS: dict[str, Degradation] = {
    "clean": lambda face, _rng: face,
    "face of 24 px": _small(24),
    "face of 16 px": _small(16),
    "box off by 10%": _box(0.10, 0.10),
    "box off by 15%": _box(0.15, 0.15),
    "blur sigma 1.5 px": _blur(1.5),
    "noise sigma 12": _noise(12),
    "JPEG quality 20": _jpeg(20),
    "dim (x0.4)": _light(0.4),
    "dark midtones (gamma 2)": _light(1.0, gamma=2.0),
    "washed out (gamma 0.5)": _light(1.0, gamma=0.5),
    "uneven light (+-50%)": _light(1.0, slope=0.5),
    "in a frame, found by the detector": in_a_frame,
    "in a frame, cut 20% wider": functools.partial(in_a_frame, margin=0.2),
    "in a frame, cut 20% wider, reframed": functools.partial(in_a_frame, margin=0.2, reframe=True),
}


def degrade(faces: np.ndarray, name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``faces`` (N, 48, 48) uint8 through one degradation, and the indices of the faces it gives back
    (all, except faces the detector did not find); face i always gets the same random draw."""
    apply = DEGRADATIONS[name]
    out = [apply(face, np.random.default_rng((seed, i))) for i, face in enumerate(faces)]
    kept = np.array([i for i, face in enumerate(out) if face is not None], dtype=int)
    return np.stack([out[i] for i in kept]) if len(kept) else faces[:0], kept


def robustness(models: Sequence[str | Path], data: str | Path, split: str = "test") -> dict:
    """Accuracy and macro recall of each model under each degradation, on one split."""
    faces = load_split(data, split)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name in DEGRADATIONS:
        images, kept = degrade(faces.images, name)
        rows[name] = {}
        for model in models:
            report = classification_report(faces.labels[kept], predict_file(model, images).argmax(axis=1))
            recall = np.mean([c["recall"] for c in report["per_class"].values() if c["support"]])
            rows[name][str(model)] = {
                "accuracy": report["accuracy"],
                "macro_recall": round(float(recall), 4),
                "faces": len(kept),
            }
    return {"data": faces.origin, "faces": len(faces), "models": [str(m) for m in models], "degradations": rows}


def _names(models: Sequence[str]) -> list[str]:
    """Each model by its file name, or folder and file name when two share a file name."""
    names = [Path(m).name for m in models]
    if len(set(names)) < len(names):
        names = [f"{Path(m).parent.name}/{Path(m).name}" for m in models]
    return names


def markdown(result: dict) -> str:
    """The report as a table: a row per degradation, accuracy (macro recall) per model."""
    models = result["models"]
    names = _names(models)
    lines = [
        f"Accuracy (macro recall) on {result['faces']} faces of {result['data']}, each degraded as named.",
        "",
        "| degradation | " + " | ".join(f"`{name}`" for name in names) + " |",
        "| --- |" + " --- |" * len(models),
    ]
    for name, by_model in result["degradations"].items():
        cells = [f"{100 * by_model[m]['accuracy']:.1f} % ({100 * by_model[m]['macro_recall']:.1f} %)" for m in models]
        lines.append(f"| {_row_name(result, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _row_name(result: dict, name: str) -> str:
    """The degradation, with how many faces it kept when that is not all of them."""
    kept = next(iter(result["degradations"][name].values()))["faces"]
    return name if kept == result["faces"] else f"{name} ({kept} found)"


def plot(result: dict, path: Path) -> None:
    """The report as bars, a group per degradation and a bar per model: where a model falls off is
    easier to see than to read from the table."""
    models, rows = result["models"], result["degradations"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) * max(len(models), 2) / 2 + 1.2))
    height = 0.8 / len(models)
    for k, (model, name) in enumerate(zip(models, _names(models))):
        y = np.arange(len(rows)) + (k - (len(models) - 1) / 2) * height
        accuracy = [100 * by_model[model]["accuracy"] for by_model in rows.values()]
        bars = ax.barh(y, accuracy, height, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_yticks(np.arange(len(rows)), [_row_name(result, name) for name in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy on {result['faces']} faces (%)")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(models), 2), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "robustness.md").write_text(markdown(result))
    plot(result, out / "robustness.png")
