"""Offline analysis: ``emotion-edge analyze SRC`` runs the service's pipeline over a video, an image
or a folder of images and writes what it saw per frame, then a summary.

Entry point for the CLI::

    run(src, fmt="jsonl", annotate=None, summary=None, config=None, *, out=sys.stdout, err=sys.stderr) -> int

- ``fmt="jsonl"``: ``out`` gets exactly one JSON object per frame and nothing else, so it can be
  piped into ``jq`` or pandas: ``{"frame": i, "ts": s, "faces": [{"track", "box", "emotion",
  "confidence", "scores"}]}``; ``emotion`` is the smoothed label the service's events report.
- ``fmt="csv"``: one row per face per frame (a frame without faces gets one row with empty face
  columns, so the time axis has no holes).
- ``annotate``: a video (``.avi``/``.mp4``) for video sources; a folder (or, for one image, an image
  path) for stills, each named after its input.
- ``summary``: a JSON file; without it a readable summary goes to ``err``. It gives the predominant
  emotion per track and overall, and each emotion's share of the time faces were seen.
- Returns 0, or 1 after one line on ``err`` naming the bad input (source, model, cascade, output).

Stills are unrelated pictures, not a sequence, so every image gets fresh tracks (its tracks end
after it), no smoothing carries over from one photo to the next, and a face counts at once
(``tracker.min_hits`` waits for frames a photo does not have). A video is analysed as the
service would see it, with the configured tracker.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from edge.config import Config
from edge.pipeline import Backfill, FrameResult, Pipeline
from edge.sources import FolderSource, ImageSource, SourceError, open_source
from edge.tools.annotate import AnnotateError, draw, open_writer
from edge.vision.detector import DetectorError
from edge.vision.model_card import ModelError
from edge.vision.tracker import Track

FORMATS = ("jsonl", "csv")


def face_record(track: Track) -> dict[str, Any]:
    return {
        "track": track.id,
        "box": list(track.box),
        "emotion": track.emotion,
        "confidence": track.confidence,
        "scores": track.scores,
    }


def frame_record(result: FrameResult) -> dict[str, Any]:
    return {
        "frame": result.frame.index,
        "ts": round(result.frame.ts, 3),
        "faces": [face_record(track) for track in result.tracks],
    }


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class CsvWriter:
    def __init__(self, out: TextIO, labels: tuple[str, ...]) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(["frame", "ts", "track", "x", "y", "w", "h", "emotion", "confidence", *labels])
        self._labels = labels

    def write(self, result: FrameResult) -> None:
        head = [result.frame.index, round(result.frame.ts, 3)]
        if not result.tracks:
            self._writer.writerow(head + [""] * (7 + len(self._labels)))
        for track in result.tracks:
            scores = [track.scores[label] for label in self._labels]
            self._writer.writerow([*head, track.id, *track.box, track.emotion, track.confidence, *scores])


class JsonlWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, result: FrameResult) -> None:
        self._out.write(json.dumps(frame_record(result)) + "\n")


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

    def add(self, result: FrameResult) -> None:
        ts = result.frame.ts
        self.frames += 1
        self.frames_with_faces += bool(result.tracks)
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.last_ts = ts
        for track in result.tracks:
            self._tracks.setdefault(track.id, Counter())[track.emotion] += 1
            self._spans.setdefault(track.id, [ts, ts])[1] = ts

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

        def shares(share: dict[str, float]) -> str:
            ranked = sorted(((p, label) for label, p in share.items() if p > 0), reverse=True)
            return ", ".join(f"{label} {p:.0%}" for p, label in ranked) or "no faces"

        lines = [
            f"{data['source']}: {plural(data['frames'], 'frame')} ({data['frames_with_faces']} with faces), "
            f"{data['seconds']:.1f} s, {plural(data['tracks'], 'track')}",
            f"overall: {data['overall']['predominant']} ({shares(data['overall']['share'])})",
        ]
        for track in data["per_track"]:
            lines.append(
                f"track {track['track']}: {track['first_ts']:.1f}-{track['last_ts']:.1f} s, "
                f"{plural(track['frames'], 'frame')}, {track['predominant']} ({shares(track['share'])})"
            )
        return "\n".join(lines) + "\n"


def run(
    src: str,
    fmt: str = "jsonl",
    annotate: str | Path | None = None,
    summary: str | Path | None = None,
    config: Config | None = None,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    if fmt not in FORMATS:
        err.write(f"analyze: unknown format {fmt!r} (use {' or '.join(FORMATS)})\n")
        return 1
    try:
        source = open_source(src)
        pipeline = Pipeline.from_config(config)
        writer = open_writer(annotate, source) if annotate else None
    except (SourceError, ModelError, DetectorError, AnnotateError) as exc:
        err.write(f"analyze: {exc}\n")
        return 1
    stills = isinstance(source, (ImageSource, FolderSource))
    if stills:
        pipeline.tracker.min_hits = 1
        pipeline.scanner.full_scan_interval = 0  # unrelated pictures: each is searched whole
    backfill = Backfill(pipeline.tracker.min_hits)  # a face is reported from its first frame

    def emit(results: list[FrameResult]) -> None:
        for done in results:
            records.write(done)
            totals.add(done)
            if writer:
                writer.write(done.frame, draw(done.frame.image, done.tracks))

    records = JsonlWriter(out) if fmt == "jsonl" else CsvWriter(out, pipeline.classifier.labels)
    totals = Summary(source.name, pipeline.classifier.labels, source.fps)
    try:
        while (frame := source.read()) is not None:
            result = pipeline.process(frame)
            if stills:
                pipeline.tracker.close(frame.ts)
            emit(backfill.push(result))
        emit(backfill.flush())
    except (SourceError, AnnotateError) as exc:
        err.write(f"analyze: {exc}\n")
        return 1
    except BrokenPipeError:  # `analyze clip.mp4 | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    finally:
        source.close()
        if writer:
            writer.close()
    out.flush()
    if summary:
        Path(summary).write_text(json.dumps(totals.to_dict(), indent=2) + "\n")
    else:
        err.write(totals.to_text())
    return 0
