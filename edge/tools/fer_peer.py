"""The peer, side by side: the ``fer`` package and this pipeline on the same truth clip, in one run.

    python -m edge.tools.fer_peer CLIP.mp4 [CLIP.mp4 ...] [--config FILE] [--fer-python /opt/fer-venv/bin/python]
    python -m edge.tools.fer_peer --photos DIR [--fer-python ...]

(each clip's truth beside it, ``CLIP.truth.json``; with no clip: the committed ``tests/fixtures/truth/*.mp4``.
``--photos``: face photos in class folders, ``DIR/<emotion>/*``, as ``python -m training photos`` writes them:
``FER.detect_emotions`` on each photo, the largest face it finds taken as the photo's, against
``EmotionClassifier.predict`` on each, as a script holding face crops would call either; a photo where ``fer``
finds no face counts as wrong.)

``fer`` 25.10.3 needs full TensorFlow, which the edge runtime never imports, so it runs in a venv of its own
(docs/benchmarks.md says how to make it) through ``fer_runner.py`` beside this module. Both sides get the clip's
frames in order and are timed on the work alone, decoding excluded: ``FER.detect_emotions`` per frame
(its defaults: Haar ``frontalface_default`` at full resolution, its TFLite model), and ``Pipeline.process``
per frame with the given (or default) config. Both are scored by ``edge.tools.truth`` against the same
truth, and the rows and the ratios are printed, per clip and over all clips (fps: total frames / total time).
A benchmark, not a test: it prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edge.config import load
from edge.pipeline import Backfill, Pipeline
from edge.sources import open_source
from edge.sources.images import IMAGE_SUFFIXES, read_image
from edge.tools.truth import Face, Score, load_truth, score
from edge.vision.classifier import EmotionClassifier
from edge.vision.emotions import EMOTIONS

RUNNER = Path(__file__).with_name("fer_runner.py")


def run_fer(python: str, clip: str) -> tuple[list[list[Face]], float]:
    lines = _fer_lines(python, [clip])
    timing = json.loads(lines[-1])
    frames = [[(tuple(face["box"]), face["label"]) for face in json.loads(line)] for line in lines[:-1]]
    return frames, timing["frames"] / timing["wall_s"]


def run_ours(clip: str, config_path: str | None) -> tuple[list[list[Face]], float]:
    pipeline = Pipeline.from_config(load(config_path) if config_path else None)
    backfill = Backfill(pipeline.tracker.min_hits)
    source = open_source(clip)
    reported: list[list[Face]] = []
    busy = 0.0
    count = 0
    while (frame := source.read()) is not None:
        started = time.perf_counter()
        result = pipeline.process(frame)
        busy += time.perf_counter() - started
        count += 1
        reported += [[(t.box, t.emotion) for t in done.tracks] for done in backfill.push(result)]
    source.close()
    reported += [[(t.box, t.emotion) for t in done.tracks] for done in backfill.flush()]
    return reported, count / busy


def run_photos(python: str, folder: Path) -> int:
    """Both on the same photos, one at a time: accuracy and macro recall, photos per second, and the gaps."""
    photos = sorted(
        p for p in folder.glob("*/*") if p.parent.name.lower() in EMOTIONS and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not photos:
        sys.exit(f"fer_peer: {folder}: no photos in class folders ({', '.join(EMOTIONS)})")
    truth = [EMOTIONS.index(p.parent.name.lower()) for p in photos]
    lines = _fer_lines(python, ["--photos"], "\n".join(map(str, photos)))
    fer = [
        max(json.loads(line), key=lambda f: f["box"][2] * f["box"][3], default={"label": None})["label"]
        for line in lines[:-1]
    ]
    fer_per_s = len(photos) / json.loads(lines[-1])["wall_s"]
    classifier = EmotionClassifier.load()
    images = [read_image(p) for p in photos]
    classifier.predict(images[:1])
    started = time.perf_counter()
    ours = [classifier.labels[int(classifier.predict([image]).argmax())] for image in images]
    our_per_s = len(photos) / (time.perf_counter() - started)
    print(f"{len(photos)} photos in {folder}; load average {os.getloadavg()[0]:.2f}")
    print("| | accuracy | macro recall | photos/s |")
    print("|---|---:|---:|---:|")
    results = {}
    for name, labels, per_s in (("`fer` 25.10.3", fer, fer_per_s), ("emotion-edge `predict`", ours, our_per_s)):
        right = [label == EMOTIONS[t] for label, t in zip(labels, truth)]
        recall = [
            sum(r for r, t in zip(right, truth) if t == c) / truth.count(c) for c in range(len(EMOTIONS)) if c in truth
        ]
        results[name] = (sum(right) / len(right), sum(recall) / len(recall))
        print(f"| {name} | {results[name][0]:.3f} | {results[name][1]:.3f} | {per_s:.0f} |")
    (fer_acc, fer_recall), (our_acc, our_recall) = results.values()
    print(
        f"emotion-edge against fer: accuracy {our_acc - fer_acc:+.3f}, macro recall {our_recall - fer_recall:+.3f}, "
        f"photos/s x{our_per_s / fer_per_s:.1f}; fer found a face in {sum(label is not None for label in fer)}"
    )
    return 0


def _fer_lines(python: str, args: list[str], stdin: str | None = None) -> list[str]:
    done = subprocess.run([python, str(RUNNER), *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"fer_peer: {python} {RUNNER.name} failed:\n{done.stderr[-2000:]}")
    return done.stdout.splitlines()


def row(clip: str, name: str, result: Score, fps: float) -> str:
    return (
        f"| {clip} | {name} | {result.recall:.3f} | {result.precision:.3f} | {result.label_accuracy:.3f} | "
        f"**{result.end_to_end:.3f}** | {fps:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", help="truth clips (default: the committed ones)")
    parser.add_argument("--config", help="this pipeline's config file (default: the defaults)")
    parser.add_argument("--fer-python", default="/opt/fer-venv/bin/python", help="the python of fer's venv")
    parser.add_argument("--photos", metavar="DIR", help="face photos in class folders instead of clips")
    args = parser.parse_args()
    if args.photos:
        return run_photos(args.fer_python, Path(args.photos))
    root = Path(__file__).resolve().parents[2]
    clips = args.clips or [str(p) for p in sorted((root / "tests" / "fixtures" / "truth").glob("*.mp4"))]
    ours_name = f"emotion-edge{' (' + args.config + ')' if args.config else ''}"
    totals = {"fer": (Score(), 0.0), "ours": (Score(), 0.0)}
    frames = 0
    print(f"load average {os.getloadavg()[0]:.2f} at the start")
    print("| clip | | recall | precision | labelled right | end-to-end | fps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for clip in clips:
        truth = load_truth(Path(clip).with_suffix(".truth.json"), EMOTIONS)
        fer_frames, fer_fps = run_fer(args.fer_python, clip)
        our_frames, our_fps = run_ours(clip, args.config)
        fer, ours = score(truth, fer_frames), score(truth, our_frames)
        print(row(f"{Path(clip).name} ({fer.faces} faces)", "`fer` 25.10.3", fer, fer_fps))
        print(row("", ours_name, ours, our_fps), flush=True)
        frames += len(truth)
        for key, result, fps in (("fer", fer, fer_fps), ("ours", ours, our_fps)):
            total, seconds = totals[key]
            for name in ("faces", "reported", "found", "right"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            totals[key] = (total, seconds + len(truth) / fps)
    (fer, fer_s), (ours, our_s) = totals["fer"], totals["ours"]
    print(row(f"**all {len(clips)}** ({fer.faces} faces)", "`fer` 25.10.3", fer, frames / fer_s))
    print(row("", ours_name, ours, frames / our_s))
    print(
        f"emotion-edge against fer: end-to-end {ours.end_to_end - fer.end_to_end:+.3f}, "
        f"recall {ours.recall - fer.recall:+.3f}, fps x{fer_s / our_s:.1f}; "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
