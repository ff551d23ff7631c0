"""A training run's settings: stored in its run folder at the start, so the same command resumes it.

Kept apart from the training code so ``python -m training --help`` and a refused resume answer at
once, without importing TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Settings a resumed run may change: where the data is (a moved folder) and how long the run is.
RESUMABLE = ("data", "run_dir", "epochs")


class TrainError(Exception):
    """A run that cannot start as configured (unknown optimiser, an init model that does not fit)."""


# Precisions a model can train in (--precision, besides "auto"), as Keras dtype policies: "bfloat16" keeps
# float32 weights and computes in bfloat16, which CPUs with AMX (Intel Xeon since Sapphire Rapids) or AVX-512
# BF16 (AMD since Zen 4) multiply in hardware.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@dataclass
class TrainConfig:
    data: str
    run_dir: str
    epochs: int = 36
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    # Class weights are (mean count / class count) ** power: 0 ignores the imbalance, 1 fully
    # inverts it. 0.5 lifts disgust's recall without sacrificing the overall accuracy.
    class_weight_power: float = 0.5
    # The shipped model's shape (docs/model.md); narrower ones train faster on a laptop.
    widths: tuple[int, ...] = (64, 96, 192, 384)
    dense: int = 512
    dropout: float = 0.4
    # "adamw" is what the shipped model's first stage used from scratch; "sgd" (Nesterov momentum),
    # with erase=0.5, is its second stage, started from the first one's weights (+0.9 points).
    optimizer: str = "adamw"
    # Share of training faces that get a random patch erased, as a hand or glasses would: a
    # regulariser against this CNN's overfitting on FER-2013 (train accuracy outruns validation).
    erase: float = 0.0
    # Share of training faces passed through a model of a Pi camera (camera_degrade): FER-2013's
    # faces are clean registered crops, the service's are Haar boxes of small, noisy, badly lit faces.
    camera: float = 0.0
    # Share of training faces shown as the pipeline gets them from a camera: drawn into a room scene,
    # found by the Haar detector and cut out by its box (training.framing); prepared once per run.
    framed: float = 0.0
    # Those framed faces are cut wider than the detector's box, each by a random share up to this of the
    # box's side on every side: crops from another detector or a photo cropped by hand frame a face more
    # loosely than Haar does, and a model that saw only tight boxes loses much on them.
    framed_margin: float = 0.0
    # A .keras model whose weights start the run: fine-tuning the shipped model on your own faces,
    # or a further training stage; one of other widths with as many stages is widened or pruned to
    # --widths/--dense (model.resize).
    # Empty: random initialisation.
    init: str = ""
    # Momentum of a running average of the weights (Polyak averaging, the optimiser's EMA); 0 is off.
    # With it on, validation, the checkpoints and the final model all hold the averaged weights:
    # an average over the last few hundred steps of a fine-tune lands in a flatter, better region
    # than the last step does.
    average: float = 0.0
    # mixup (Zhang et al. 2018): each training face blended with another face of its batch, and its
    # label with that face's label, by a share drawn from Beta(alpha, alpha); this is alpha, 0 is off.
    # FER-2013's labels are noisy and its classes overlap (fear and sad, disgust and angry); a
    # blended target asks for scores between them instead of certainty about either.
    mixup: float = 0.0
    # What the network computes in: "float32", "bfloat16" (float32 weights, bfloat16 arithmetic; on a
    # CPU with AMX or AVX-512 BF16 it trains faster) or "auto", which is bfloat16 on such a CPU and
    # float32 elsewhere. The saved models are float32 either way.
    precision: str = "auto"
    val_fraction: float = 0.1
    seed: int = 0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """The settings stored in ``path``; TrainError naming it when they cannot be read."""
        try:
            stored = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in stored.items() if k in known}
            values["widths"] = tuple(values.get("widths", cls.widths))
            return cls(**values)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise TrainError(f"{path}: unreadable run settings ({type(exc).__name__}: {exc})") from None


def changed_settings(stored: TrainConfig, requested: TrainConfig) -> list[str]:
    """``--flag stored -> requested`` for each setting that differs, except those a resume may change."""
    old, new = asdict(stored), asdict(requested)
    return [
        f"--{name.replace('_', '-')} {old[name]} -> {new[name]}"
        for name in old
        if name not in RESUMABLE and old[name] != new[name]
    ]
