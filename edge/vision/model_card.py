"""The model card beside every .tflite: what the runtime must know to feed the model and trust it.

The runtime refuses a model whose sha256 differs from its card's, so a retrained model copied to a
Pi without its card (or with another model's card) fails loudly instead of mislabelling faces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD_SCHEMA = 1


class ModelError(RuntimeError):
    """A model or card that cannot be used; the message names the file."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorSpec:
        """From an interpreter's get_input_details()/get_output_details() entry."""
        scale, zero_point = details["quantization"]
        return cls(tuple(int(d) for d in details["shape"]), details["dtype"].__name__, float(scale), int(zero_point))

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class ModelCard:
    labels: tuple[str, ...]
    sha256: str
    input: TensorSpec
    output: TensorSpec
    info: dict[str, Any]

    @classmethod
    def of_model(cls, model_path: Path) -> ModelCard:
        """The card beside ``model_path``; a missing one is named after the model asked for, as the user typed
        that, not the .json."""
        path = card_path(model_path)
        try:
            data = json.loads(path.read_text())
            return cls(
                labels=tuple(data["labels"]),
                sha256=data["sha256"],
                input=TensorSpec(**{**data["input"], "shape": tuple(data["input"]["shape"])}),
                output=TensorSpec(**{**data["output"], "shape": tuple(data["output"]["shape"])}),
                info={k: v for k, v in data.items() if k not in ("labels", "sha256", "input", "output")},
            )
        except FileNotFoundError:
            missing = f"{model_path}: model card not found ({path}; every .tflite needs its .json card)"
            raise ModelError(missing) from None
        except KeyError as exc:
            raise ModelError(f"{path}: unreadable model card (no {exc.args[0]!r} field)") from None
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable model card ({type(exc).__name__}: {exc})") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CARD_SCHEMA,
            "labels": list(self.labels),
            "sha256": self.sha256,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            **{k: v for k, v in self.info.items() if k != "schema"},
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
