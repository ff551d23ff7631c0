"""Still images as a source: one file, or every image in a folder in name order.

Stills have no clock, so a frame's ``ts`` is its position divided by a nominal rate (one image per
second unless told otherwise); a folder of frames extracted from a video at 10 fps keeps its timing
with ``fps=10``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge.noise import stderr_to_log
from edge.sources.base import Frame, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"})


def read_image(path: Path) -> np.ndarray:
    """A BGR image from ``path`` (gray files are expanded to three channels), or SourceError naming it."""
    if not path.is_file():
        raise SourceError(f"{path}: no such image file")
    # A truncated JPEG still decodes (its missing end gray); libjpeg says so on fd 2, here after the name.
    with stderr_to_log(log, logging.WARNING, prefix=f"{path}: "):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


class _StillSource:
    live = False

    def __init__(self, name: str, paths: list[Path], fps: float, loop: bool) -> None:
        self.name = name
        self.paths = paths
        self.fps = fps if fps > 0 else 1.0
        self._loop = loop
        self._index = 0
        self._unreadable: set[int] = set()

    @property
    def skipped(self) -> int:
        """How many files could not be read."""
        return len(self._unreadable)

    def read(self) -> Frame | None:
        while self._loop or self._index < len(self.paths):
            index = self._index
            self._index += 1
            position = index % len(self.paths)
            if position in self._unreadable:
                continue
            try:
                image = self._image(position)
            except SourceError as exc:
                self._unreadable.add(position)
                log.warning("skipped %s", exc)
                if len(self._unreadable) == len(self.paths):
                    raise SourceError(f"{self.name}: none of its images is readable") from None
                continue
            return Frame(image, None, index, index / self.fps)
        return None

    def _image(self, position: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is held open between reads."""


class FolderSource(_StillSource):
    """The images of a folder (not its subfolders), sorted by name.

    ``index`` is the file's position in ``paths`` (modulo its length when looping), so a consumer
    can name its outputs after its inputs; an unreadable file is skipped with a warning (one bad
    photo should not end a batch) and shows as a gap in the indices.
    """

    def __init__(self, folder: str | Path, *, fps: float = 0, loop: bool = False) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such folder")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise SourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        super().__init__(str(folder), paths, fps, loop)

    def _image(self, position: int) -> np.ndarray:
        return read_image(self.paths[position])


class ImageSource(_StillSource):
    """A single image: one frame, or the same frame forever with ``loop`` (a camera stand-in for demos)."""

    def __init__(self, path: str | Path, *, fps: float = 0, loop: bool = False) -> None:
        path = Path(path)
        self._still = read_image(path)
        super().__init__(str(path), [path], fps, loop)

    def _image(self, position: int) -> np.ndarray:
        return self._still
