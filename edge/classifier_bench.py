"""``python -m edge.classifier_bench``: milliseconds per face for the emotion classifier alone.

The budget it checks is issue 2's: at most 2 ms per face on one thread. Faces are crops of the
bundled demo clip's first frame at their detected size, so the figure includes the resize to the
model's input, as in the service; the network's cost does not depend on what the pixels show.

    python -m edge.classifier_bench [--model M] [--backend auto] [--threads 1] [--n 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from edge.classifier import EmotionClassifier
from edge.detector import HaarDetector
from edge.model_card import ModelError
from edge.pipeline import crop
from edge.sources import DEMO_CLIP, open_source

BUDGET_MS = 2.0


def demo_faces() -> list[np.ndarray]:
    source = open_source(str(DEMO_CLIP))
    try:
        frame = source.read()
    finally:
        source.close()
    return [crop(frame.image, box) for box in HaarDetector().detect(frame)]


def run(model: str | None = None, *, backend: str = "auto", threads: int = 1, n: int = 500) -> dict[str, float]:
    classifier = EmotionClassifier.load(model, backend=backend, num_threads=threads)
    faces = demo_faces()
    for face in faces * 5:  # warm-up: the first invocations allocate and are slower
        classifier.predict([face])
    times = []
    for i in range(n):
        face = faces[i % len(faces)]
        started = time.perf_counter()
        classifier.predict([face])
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    return {
        "mean_ms": statistics.fmean(times),
        "median_ms": statistics.median(times),
        "p95_ms": times[round(0.95 * (len(times) - 1))],
        "faces": n,
        "threads": threads,
        "backend": classifier.backend,
        "input": classifier.input_size,
        "face_size": faces[0].shape[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.classifier_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .tflite with its .json card (default: the shipped model)")
    parser.add_argument("--backend", default="auto", help="auto, ai_edge_litert, tflite_runtime or tensorflow")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1: the budget's terms)")
    parser.add_argument("--n", type=int, default=500, help="faces to classify (default 500)")
    args = parser.parse_args(argv)
    try:
        result = run(args.model, backend=args.backend, threads=args.threads, n=max(1, args.n))
    except ModelError as exc:
        print(f"classifier_bench: {exc}", file=sys.stderr)
        return 1
    verdict = "within" if result["median_ms"] <= BUDGET_MS else "OVER"
    print(
        f"{result['median_ms']:.3f} ms/face median, {result['mean_ms']:.3f} mean, {result['p95_ms']:.3f} p95 "
        f"({result['faces']} faces of {result['face_size']} px -> {result['input']} px, {result['threads']} thread(s), "
        f"{result['backend']}); {verdict} the {BUDGET_MS:g} ms budget"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
