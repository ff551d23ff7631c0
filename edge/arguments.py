"""Argument types shared by the command lines (``emotion-edge`` and ``python -m training``), so a number out of
range is argparse's one usage line, in the words the config check uses, before any work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(kind: type[int] | type[float], low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` from ``low`` to ``high`` (or without a top; a top is what a
    timing can use, where more would hang it or crash the interpreter)."""
    noun = "a whole number" if kind is int else "a number"
    wanted = f"{noun} {low:g}..{high:g}" if high is not None else f"{noun} of at least {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:  # also digits int() does not take, such as '²'
            value = math.nan
        if not (low <= value < math.inf and (high is None or value <= high)):  # NaN is neither
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse
