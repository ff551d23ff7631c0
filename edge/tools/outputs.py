"""Files a command is asked to write, checked before the work that fills them.

An analysis of a long video takes minutes; a mistyped output path found only at its end costs the
whole run. Every writer and every command's output option goes through :func:`check_output` first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path


class OutputError(ValueError):
    """An output that cannot be written; the message starts with its path."""


def check_output(path: str | Path, suffixes: Sequence[str] = (), *, make_folders: bool = False) -> Path:
    """``path`` as a Path if it can become a file: not a folder, one of ``suffixes`` (if any) at its end, in
    a folder that exists (or, with ``make_folders``, under the nearest one that does: the writer makes the
    rest) and may be written; else OutputError saying which of these fails. Nothing is made here."""
    target = Path(path)
    folder = target.parent
    if make_folders:
        folder = next(f for f in (folder, *folder.parents) if f.exists())
    if target.is_dir():
        reason = "is a folder, not a file"
    elif suffixes and target.suffix.lower() not in suffixes:
        *others, last = suffixes
        reason = f"the name must end in {', '.join(others) + ' or ' if others else ''}{last}"
    elif not folder.exists():
        reason = f"folder {folder} does not exist"
    elif not folder.is_dir():
        reason = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        reason = f"folder {folder} is not writable"
    else:
        return target
    raise OutputError(f"{path}: {reason}")


def check_not_an_input(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """OutputError if an output is one of the inputs: writing it would destroy what is being read."""
    inputs = list(inputs)
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        # by path, and by file: a hard link is the same file under another name
        if out.resolve() in sources or (out.exists() and any(src.exists() and out.samefile(src) for src in inputs)):
            raise OutputError(f"{out}: is one of the inputs; writing it would replace the original")
