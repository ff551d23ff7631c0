"""Third-party libraries that talk on the process's stderr, routed through our logging or silenced.

The C++ runtimes under us print straight to file descriptor 2, where a user reading the journal
cannot tell them from our own lines: LiteRT announces "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU." at every start, FFmpeg reports every damaged macroblock of a corrupt video
("[mpeg4 @ 0x…] header damaged"), libjpeg a truncated photo ("Premature end of JPEG file") and
OpenCV warns about every stream timeout. What they say that matters reaches the user as our one
line (a SourceError, a ModelError, "frames skipped", libjpeg's warning after the file's name); the
rest is kept at debug level (LiteRT) or not produced at all (OpenCV, FFmpeg).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


def quiet_opencv() -> None:
    """OpenCV's own messages at ERROR and above only, FFmpeg's none; call before the first capture."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read at the first FFmpeg capture
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _scratch_file() -> BinaryIO:
    """A file in memory where Linux allows one (it runs around every photo read: no disk, no SD card wear),
    else a temporary file."""
    try:
        return os.fdopen(os.memfd_create("stderr", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # not Linux, or a seccomp filter that refuses it with EPERM
        return tempfile.TemporaryFile(mode="w+b")


@contextlib.contextmanager
def stderr_to_log(logger: logging.Logger, level: int = logging.DEBUG, prefix: str = "") -> Iterator[None]:
    """Whatever native code writes to fd 2 inside the block becomes lines of ``logger`` at ``level``, each
    after ``prefix`` (what it was about: the native line names nothing)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon with fd 2 closed): nothing to route
        yield
        return
    with _scratch_file() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.log(level, "%s%s", prefix, line.strip())
