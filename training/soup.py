"""A weight soup: one model whose every weight is the mean of the same weight in several models.

Models fine-tuned from one starting point lie in one basin of the loss, so their mean is a model too,
often better than each (Wortsman et al. 2022, "Model soups"), at no cost at inference: it is one network
of the same shape, where an ensemble would cost a pass per member. Batch-norm statistics are averaged
like the weights, as ``train --average`` keeps them: recomputing them for averaged weights did worse
(docs/model.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np

from edge.vision.model_card import sha256_of
from training.config import TrainError
from training.files import FLOAT_MODEL, load_keras_model
from training.train import save_float_model

log = logging.getLogger(__name__)

REPORT = "report.json"


def mean_weights(models: list[keras.Model], names: list[str]) -> list[np.ndarray]:
    """Every weight averaged over the models; TrainError naming the first model whose shapes differ."""
    weights = [model.get_weights() for model in models]
    shapes = [w.shape for w in weights[0]]
    for each, name in zip(weights[1:], names[1:]):
        if [w.shape for w in each] != shapes:
            raise TrainError(f"{name}: its layers differ from {names[0]}'s; a soup needs models of one architecture")
    return [np.mean(stack, axis=0) for stack in zip(*weights)]


def soup(paths: list[Path], out: Path) -> dict:
    """Write the soup of the float models ``paths`` (as training.files.soup_sources finds and checks them) as
    ``out``/model_float.keras, with a report naming each ingredient and its sha256, so that ``convert out``
    ships it with its record."""
    models = [load_keras_model(path) for path in paths]
    weights = mean_weights(models, [str(path) for path in paths])
    models[0].set_weights(weights)
    out.mkdir(parents=True, exist_ok=True)
    save_float_model(models[0], out / FLOAT_MODEL)
    report = {
        "soup": [{"model": str(path), "sha256": sha256_of(path.read_bytes())} for path in paths],
        "parameters": int(models[0].count_params()),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s, the mean of %d models' weights", out / FLOAT_MODEL, len(paths))
    return report
