"""Offline analysis: ``emotion-edge analyze SRC`` runs the service's pipeline over a video, an image
or a folder of images and writes what it saw per frame, then a summary.

Entry point for the CLI::

    run(src, fmt="jsonl", annotate=None, summary=None, config=None, *, raw=False, report=None,
        out=sys.stdout, err=sys.stderr) -> int

- ``fmt="jsonl"``: ``out`` gets exactly one JSON object per frame and nothing else, so it can be
  piped into ``jq`` or pandas: ``{"frame": i, "ts": s, "faces": [{"track", "box", "emotion",
  "confidence", "scores"}]}``; ``emotion`` is the smoothed label the service's events report.
- ``fmt="csv"``: one row per face per frame (a frame without faces gets one row with empty face
  columns, so the time axis has no holes).
- ``annotate``: a video (``.avi``/``.mp4``) for video sources; a folder (or, for one image, an image
  path) for stills, each named after its input.
- ``summary``: a JSON file; without it a readable summary goes to ``err``. It gives the predominant
  emotion per track and overall, and each emotion's share of the time faces were seen.
- ``raw``: each face also gets ``raw``, the classifier's unsmoothed scores on that frame (CSV:
  ``raw_<label>`` columns); a face the detector missed but the pipeline held has ``null``.
- ``report``: an HTML page or PNG (by the suffix) of the run: :mod:`edge.report`, needs ``[report]``.
- Long runs show progress on ``err``: a tqdm bar on a terminal, a plain line every
  ``PROGRESS_EVERY`` seconds otherwise.
- Returns 0, or 1 after one ERROR log line (``ERROR analyze: …``, as every command's fatal error reads)
  naming the bad input (source, model, cascade, output); ``err`` carries the summary and progress only.
  Every output path is checked before the first frame (:func:`check_output`), so a mistyped one
  does not cost the run; one that still cannot be written at the end costs only that file.

:func:`analyse` is the loop itself, shared with :func:`edge.analysis.analyze_video`, so the
Python API and the command produce the same records.

Stills are unrelated pictures, not a sequence, so every image gets fresh tracks (its tracks end
after it), no smoothing carries over from one photo to the next, and a face counts at once
(``tracker.min_hits`` waits for frames a photo does not have). A video is analysed as the
service would see it, with the configured tracker.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2

from edge import report as reports
from edge.config import Config
from edge.pipeline import Backfill, FrameResult, Pipeline
from edge.sources import FolderSource, FrameSource, ImageSource, SourceError, VideoFileSource, open_source
from edge.tools.annotate import draw, open_writer
from edge.tools.outputs import OutputError, check_not_an_input, check_output
from edge.vision.detector import DetectorError
from edge.vision.model_card import ModelError
from edge.vision.tracker import Track

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv")
PROGRESS_EVERY = 10.0  # seconds between plain progress lines when stderr is not a terminal


def face_record(track: Track) -> dict[str, Any]:
    return {
        "track": track.id,
        "box": list(track.box),
        "emotion": track.emotion,
        "confidence": track.confidence,
        "scores": track.scores,
    }


def frame_record(result: FrameResult, *, raw: bool = False, labels: Sequence[str] = ()) -> dict[str, Any]:
    """``raw`` adds each face's unsmoothed scores, looked up by its box: the classifier's answer for its
    detection on this frame, or None for a face held where the detector missed it (Pipeline.hold)."""
    faces = []
    for track in result.tracks:
        face = face_record(track)
        if raw:
            scores = result.raw.get(tuple(track.box))
            face["raw"] = None if scores is None else {label: round(float(p), 4) for label, p in zip(labels, scores)}
        faces.append(face)
    return {"frame": result.frame.index, "ts": round(result.frame.ts, 3), "faces": faces}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def csv_header(labels: Sequence[str], *, raw: bool = False) -> list[str]:
    extra = [f"raw_{label}" for label in labels] if raw else []
    return ["frame", "ts", "track", "x", "y", "w", "h", "emotion", "confidence", *labels, *extra]


def csv_rows(record: Mapping[str, Any], labels: Sequence[str], *, raw: bool = False) -> list[list[Any]]:
    """One row per face (a frame without faces: one row, face columns empty, so the time axis has no holes)."""
    head = [record["frame"], record["ts"]]
    width = len(csv_header(labels, raw=raw)) - len(head)
    if not record["faces"]:
        return [head + [""] * width]
    rows = []
    for face in record["faces"]:
        scores = [face["scores"][label] for label in labels]
        extra = [(face["raw"] or {}).get(label, "") for label in labels] if raw else []
        rows.append([*head, face["track"], *face["box"], face["emotion"], face["confidence"], *scores, *extra])
    return rows


class CsvWriter:
    def __init__(self, out: TextIO, labels: tuple[str, ...], *, raw: bool = False) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(csv_header(labels, raw=raw))
        self._labels = labels
        self._raw = raw

    def write(self, record: Mapping[str, Any]) -> None:
        self._writer.writerows(csv_rows(record, self._labels, raw=self._raw))


class JsonlWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, record: Mapping[str, Any]) -> None:
        self._out.write(json.dumps(record) + "\n")


class Summary:
    """Counts, per track, the frames it spent under each (smoothed) emotion.

    For a constant-rate video a share of frames is a share of time; stills count one each.
    """

    def __init__(self, source: str, labels: tuple[str, ...], fps: float) -> None:
        self.source = source
        self.labels = labels
        self.frame_time = 1.0 / fps if fps > 0 else 0.0
        self.frames = 0
        self.frames_with_faces = 0
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self._tracks: dict[int, Counter[str]] = {}
        self._spans: dict[int, list[float]] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        """One frame record (what :func:`frame_record` builds and ``analyze`` prints)."""
        ts = record["ts"]
        self.frames += 1
        self.frames_with_faces += bool(record["faces"])
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.last_ts = ts
        for face in record["faces"]:
            self._tracks.setdefault(face["track"], Counter())[face["emotion"]] += 1
            self._spans.setdefault(face["track"], [ts, ts])[1] = ts

    def _shares(self, counts: Counter[str]) -> dict[str, float]:
        total = sum(counts.values())
        return {label: round(counts[label] / total, 4) if total else 0.0 for label in self.labels}

    @staticmethod
    def _predominant(counts: Counter[str]) -> str:
        return counts.most_common(1)[0][0] if counts else "none"

    def to_dict(self) -> dict[str, Any]:
        overall = sum(self._tracks.values(), Counter())
        return {
            "source": self.source,
            "frames": self.frames,
            "frames_with_faces": self.frames_with_faces,
            "seconds": round(self.last_ts - (self.first_ts or 0.0) + self.frame_time, 3),
            "tracks": len(self._tracks),
            "overall": {"predominant": self._predominant(overall), "share": self._shares(overall)},
            "per_track": [
                {
                    "track": track_id,
                    "first_ts": round(self._spans[track_id][0], 3),
                    "last_ts": round(self._spans[track_id][1], 3),
                    "frames": sum(counts.values()),
                    "predominant": self._predominant(counts),
                    "share": self._shares(counts),
                }
                for track_id, counts in self._tracks.items()
            ],
        }

    def to_text(self) -> str:
        data = self.to_dict()

        def shares(part: dict[str, Any]) -> str:
            # Largest first. Among equal shares the predominant emotion (a tie goes to the one seen first, as
            # in the report) leads, as the line names it; the rest keep the canonical order (angry … neutral)
            # of the JSON summary and the report's columns: ``share`` is in that order and the sort is stable.
            top, share = part["predominant"], part["share"]
            ranked = sorted((label for label, p in share.items() if p > 0), key=lambda e: (-share[e], e != top))
            return ", ".join(f"{label} {share[label]:.0%}" for label in ranked) or "no faces"

        lines = [
            f"{data['source']}: {plural(data['frames'], 'frame')} ({data['frames_with_faces']} with faces), "
            f"{data['seconds']:.1f} s, {plural(data['tracks'], 'track')}",
            f"overall: {data['overall']['predominant']} ({shares(data['overall'])})",
        ]
        for track in data["per_track"]:
            lines.append(
                f"track {track['track']}: {track['first_ts']:.1f}-{track['last_ts']:.1f} s, "
                f"{plural(track['frames'], 'frame')}, {track['predominant']} ({shares(track)})"
            )
        return "\n".join(lines) + "\n"


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log, CI) a plain line every ``every`` seconds, no carriage returns."""

    def __init__(self, total: int | None, err: TextIO, *, bar: bool | None = None, every: float = PROGRESS_EVERY):
        self._bar: Any = None
        if bar if bar is not None else err.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=err, unit="frame", leave=False)
        self.total = total
        self.err = err
        self.every = every
        self.done = 0
        self._started = self._shown = time.monotonic()

    def update(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update()
            return
        now = time.monotonic()
        if now - self._shown >= self.every:
            self._shown = now
            rate = self.done / max(now - self._started, 1e-9)
            of = f" of {self.total} ({self.done / self.total:.0%})" if self.total else ""
            self.err.write(f"analyze: frame {self.done}{of}, {rate:.1f} frames/s\n")
            self.err.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def frame_count(source: FrameSource) -> int | None:
    """Frames in a video file, as its container says (for the progress bar; None where unknown)."""
    if not isinstance(source, VideoFileSource):
        return None
    capture = cv2.VideoCapture(source.name)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


@dataclass
class Analysis:
    """An open source and the pipeline that will read it; :meth:`frames` runs it."""

    source: FrameSource
    pipeline: Pipeline

    @classmethod
    def open(cls, src: str, config: Config | None = None) -> Analysis:
        """Raises SourceError, ModelError or DetectorError naming the input."""
        source = open_source(src)
        try:
            return cls(source, Pipeline.from_config(config))
        except (ModelError, DetectorError):
            source.close()
            raise

    @property
    def stills(self) -> bool:
        return isinstance(self.source, (ImageSource, FolderSource))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.pipeline.classifier.labels

    def frames(
        self, *, raw: bool = False, progress: bool | None = None, err: TextIO = sys.stderr
    ) -> Iterator[tuple[FrameResult, dict[str, Any]]]:
        """Each frame's result and its record, a face counted from its first frame (Backfill): the records
        lag the source by ``min_hits - 1`` frames. Stills get fresh tracks each, searched whole, and count a
        face at once."""
        if self.stills:
            self.pipeline.tracker.min_hits = 1
            self.pipeline.scanner.full_scan_interval = 0  # unrelated pictures: each is searched whole
        # Offline there is time to classify every face on every frame, which the live service spares on
        # faces whose look did not change (tracker.reclassify); so each face has its raw scores too.
        self.pipeline.reclassify = 0
        backfill = Backfill(self.pipeline.tracker.min_hits)
        shown = Progress(frame_count(self.source), err, bar=progress)
        try:
            while (frame := self.source.read()) is not None:
                result = self.pipeline.process(frame)
                if self.stills:
                    self.pipeline.tracker.close(frame.ts)
                shown.update()
                for done in backfill.push(result):
                    yield done, frame_record(done, raw=raw, labels=self.labels)
            for done in backfill.flush():
                yield done, frame_record(done, raw=raw, labels=self.labels)
        finally:
            shown.close()

    def close(self) -> None:
        self.source.close()


def run(
    src: str,
    fmt: str = "jsonl",
    annotate: str | Path | None = None,
    summary: str | Path | None = None,
    config: Config | None = None,
    *,
    raw: bool = False,
    report: str | Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    if fmt not in FORMATS:
        log.error("analyze: unknown format %r (use %s)", fmt, " or ".join(FORMATS))
        return 1
    try:
        _check_outputs(summary, report)
        _check_not_the_input(src, annotate=annotate, summary=summary, report=report)
        analysis = Analysis.open(src, config)
    except (OutputError, SourceError, ModelError, DetectorError) as exc:
        log.error("analyze: %s", exc)
        return 1
    source, labels = analysis.source, analysis.labels
    try:
        writer = open_writer(annotate, source) if annotate else None
    except OutputError as exc:
        analysis.close()
        log.error("analyze: --annotate %s", exc)
        return 1
    records = JsonlWriter(out) if fmt == "jsonl" else CsvWriter(out, labels, raw=raw)
    totals = Summary(source.name, labels, source.fps)
    kept: list[dict[str, Any]] = []
    failed = True  # until the frames are all read: a half-written video is not kept
    listened = True  # False once a reader of the records has gone: `analyze clip.mp4 | head`
    cut_short = False
    try:
        for result, record in analysis.frames(raw=raw, err=err):
            if listened:
                listened = _write_record(records, record, out)
                if cut_short := not (listened or writer or summary or report):
                    break  # the reader has all it wanted, and no file waits for the rest
            totals.add(record)
            if report:
                kept.append(record)
            if writer:
                writer.write(result.frame, draw(result.frame.image, result.tracks))
        failed = False
    except SourceError as exc:
        log.error("analyze: %s", exc)
        return 1
    except OutputError as exc:
        log.error("analyze: --annotate %s", exc)
        return 1
    finally:
        analysis.close()
        if writer:
            try:
                writer.close(complete=not failed)
            except OutputError as exc:
                log.error("analyze: --annotate %s", exc)
                failed = True
    if failed:
        return 1
    if cut_short:  # a summary of the frames read so far would pass for the whole clip's
        return 0
    if listened:
        _write_record(records, None, out)
    code = 0
    if summary:
        code |= _save(
            "--summary", summary, lambda target: target.write_text(json.dumps(totals.to_dict(), indent=2) + "\n")
        )
    else:
        err.write(totals.to_text())
    if report:
        code |= _write_report(kept, source.fps, source.name, report)
    return code


def _write_record(records: CsvWriter | JsonlWriter, record: dict[str, Any] | None, out: TextIO) -> bool:
    """Write ``record`` (None: flush what is buffered); False once the reader has gone, as ``head`` goes when it
    has its lines (noticed when the buffer is next written out): the rest is written to nothing, so that the run
    can finish its files and exit quietly."""
    try:
        if record is None:
            out.flush()
        else:
            records.write(record)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return False
    return True


def _check_outputs(summary: str | Path | None, report: str | Path | None) -> None:
    """OutputError, naming the option, for a summary or report that could not be written after the run."""
    for option, path, suffixes in (("--summary", summary, ()), ("--report", report, reports.SUFFIXES)):
        if path:
            try:
                check_output(path, suffixes)
            except OutputError as exc:
                raise OutputError(f"{option} {exc}") from None
    if report and importlib.util.find_spec("matplotlib") is None:
        raise OutputError(f"--report {report}: needs the [report] extra (pip install 'emotion-edge[report]')")


def _check_not_the_input(src: str, **outputs: str | Path | None) -> None:
    """OutputError, naming the option, for an output that is the video or image being analysed: written
    while it is read (``--annotate``) or after (``--summary``), it would destroy the recording."""
    if not Path(src).is_file():
        return
    for option, path in outputs.items():
        if path:
            try:
                check_not_an_input([Path(path)], [Path(src)])
            except OutputError as exc:
                raise OutputError(f"--{option} {exc}") from None


def _save(option: str, path: str | Path, write: Callable[[Path], object]) -> int:
    """An output that fails this late (disk full, permissions) costs only itself: the records are on stdout
    already and the other outputs are still written."""
    try:
        write(Path(path))
    except OSError as exc:
        log.error("analyze: %s %s: cannot write (%s)", option, path, exc.strerror)
        return 1
    return 0


def _write_report(records: list[dict[str, Any]], fps: float, name: str, path: str | Path) -> int:
    def write(out: Path) -> None:
        reports.write(reports.from_records(records, fps=fps, source=name), out)

    return _save("--report", path, write)
