"""Recordings from Python, the way ``fer``'s ``Video`` works: analyse, then a DataFrame, a summary, a plot.

::

    from edge.analysis import analyze_video

    rec = analyze_video("talk.mp4")
    df = rec.to_pandas()          # one row per face per frame, the columns of `analyze --format csv`
    rec.summary()["overall"]      # predominant emotion and each emotion's share of face-time
    rec.plot().savefig("talk.png")
    rec.report("talk.html")       # the page `analyze --report` writes

It runs ``emotion-edge analyze``'s own code (:mod:`edge.tools.analyze`), so ``rec.rows`` are exactly
the JSON lines the command prints. pandas and matplotlib come from the ``[report]`` extra and are
imported only by the methods that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.tools import analyze


@dataclass
class Recording:
    """What ``analyze`` saw: ``rows`` holds one record per frame (the JSONL objects)."""

    source: str
    fps: float
    labels: tuple[str, ...]
    rows: list[dict[str, Any]] = field(repr=False)  # a notebook echoing `rec` prints one line, not every frame

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def summary(self) -> dict[str, Any]:
        """Predominant emotion per face and overall, with each emotion's share: ``analyze --summary``'s JSON."""
        totals = analyze.Summary(self.source, self.labels, self.fps)
        for row in self.rows:
            totals.add(row)
        return totals.to_dict()

    def to_pandas(self) -> Any:
        """A DataFrame with one row per face per frame (a frame without faces: one row, face columns empty)."""
        import pandas as pd

        raw = self._raw
        header = analyze.csv_header(self.labels, raw=raw)
        rows = [row for record in self.rows for row in analyze.csv_rows(record, self.labels, raw=raw)]
        frame = pd.DataFrame(rows, columns=header).replace("", None)
        numeric = [c for c in header if c != "emotion"]
        frame[numeric] = frame[numeric].apply(pd.to_numeric)
        return frame

    @property
    def _raw(self) -> bool:
        return any("raw" in face for record in self.rows for face in record["faces"])

    def _report(self) -> Any:
        from edge import report

        return report.from_records(self.rows, fps=self.fps, source=self.source)

    def plot(self) -> Any:
        """A matplotlib Figure: each emotion's share over time, each face's predominant emotion, each
        face's scores with the room's mean."""
        from edge.report import render

        return render.figure(self._report())

    def report(self, path: str | Path) -> Path:
        """The self-contained HTML page (or PNG, by the suffix) of ``analyze --report``."""
        from edge import report

        return report.write(self._report(), path)


def analyze_video(
    path: str | Path, config: Config | None = None, *, raw: bool = False, progress: bool | None = None
) -> Recording:
    """Analyse a video (or an image, or a folder of images) with the service's pipeline.

    ``config`` supplies ``[detector]``/``[classifier]``/``[tracker]`` (defaults if None); ``raw`` adds
    each face's unsmoothed scores beside the smoothed ones; ``progress`` shows a bar on stderr
    (default: when stderr is a terminal). Raises SourceError, ModelError or DetectorError naming the input.
    """
    analysis = analyze.Analysis.open(str(path), config)
    try:
        rows = [record for _, record in analysis.frames(raw=raw, progress=progress)]
    finally:
        analysis.close()
    return Recording(analysis.source.name, analysis.source.fps, analysis.labels, rows)
