"""Files a command is asked to write, checked before the work that fills them.

An analysis of a long video takes minutes; a mistyped output path found only at its end costs the
whole run. Every writer and every command's output option goes through :func:`check_output` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


class OutputError(ValueError):
    """An output that cannot be written; the message starts with its path."""


def check_output(path: str | Path, suffixes: Sequence[str] = ()) -> Path:
    """``path`` as a Path if it can become a file: not a folder, one of ``suffixes`` (if any) at its end,
    in a folder that exists; else OutputError saying which of these fails."""
    target = Path(path)
    if target.is_dir():
        reason = "is a folder, not a file"
    elif suffixes and target.suffix.lower() not in suffixes:
        *others, last = suffixes
        reason = f"the name must end in {', '.join(others) + ' or ' if others else ''}{last}"
    elif not target.parent.exists():
        reason = f"folder {target.parent} does not exist"
    elif not target.parent.is_dir():
        reason = f"{target.parent} is not a folder"
    else:
        return target
    raise OutputError(f"{path}: {reason}")


def check_not_an_input(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """OutputError if an output is one of the inputs: writing it would destroy what is being read."""
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in sources:
            raise OutputError(f"{out}: is one of the inputs; writing it would replace the original")
