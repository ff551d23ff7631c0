"""TensorFlow's own chatter kept off the terminal of ``python -m training`` and ``python -m convert``, so what
a user reads there is the tools' progress lines and the errors, not TensorFlow's notices between them.

Without this, converting one model printed some fifty lines: oneDNN and CPU-feature notices at start-up,
then the TFLite converter's ``Saved artifact at …`` with a ``Captures:`` line per variable (printed to
stdout), ``Assets written to``, a ``UserWarning`` and ``fully_quantize: 0, …`` (from C++, to stderr).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def quiet_startup() -> None:
    """Before TensorFlow is imported: its C++ logging below errors (start-up notices) stays unprinted; an
    explicit ``TF_CPP_MIN_LOG_LEVEL`` wins, for whoever debugs TensorFlow itself."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow() -> None:
    """Import TensorFlow (and so Keras' backend) with what it prints while it loads held (held_output): since
    2.21 its oneDNN notice comes through absl before any log level applies, twice. Called where a command
    first needs it, once its cheap checks have passed; later imports are Python's cached module."""
    if "tensorflow" in sys.modules:
        return
    with held_output():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def held_output() -> Iterator[None]:
    """Whatever is written to stdout and stderr inside, by Python or by C++ (file descriptors 1 and 2), is held
    in a temporary file: dropped when the block succeeds, written to stderr when it raises, so a failure still
    shows everything TensorFlow said about it, after the fact."""
    _flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        done = False
        try:
            yield
            done = True
        finally:
            _flush()  # Python's buffers into the held file, before the real descriptors come back
            for fd, target in zip(saved, (1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            if not done:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
