"""``emotion-edge bench [SRC]``: how fast the pipeline runs here, stage by stage, and what it costs in memory;
``emotion-edge bench --classifier``: milliseconds per face for the emotion classifier alone.

Entry points for the CLI::

    run(src=None, config=None, *, frames=300, truth=None, out=sys.stdout) -> dict
    run_classifier(model=None, *, backend="auto", threads=1, n=500) -> dict

``src`` defaults to the bundled demo clip (640x480, one to three faces), played in a loop until
``frames`` frames are processed. Capture runs in the same thread as the stages here, so ``fps`` is
the sequential throughput (the service overlaps capture with processing and can only do better).
With ``truth`` (a truth file, see ``edge.tools.truth``) the clip is played once, from its start, and
what the pipeline reported on each frame is scored against it: recall, precision, labels, end-to-end.
The report prints to ``out`` and the same figures come back as a dict (``bench.to_text`` renders one).
CPU time per frame is printed beside wall time because on a shared machine wall time measures the
neighbours too; the load average says how busy the machine was.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge.config import Config
from edge.pipeline import Backfill, Pipeline, crop
from edge.sources import open_source
from edge.tools.demo import DEMO_CLIP
from edge.tools.truth import Face, load_truth, score
from edge.tools.truth import to_text as truth_text
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import HaarDetector, grow

STAGES = ("capture", "detect", "classify", "track")
WARMUP = 5  # first interpreter invocations and cascade evaluations are slower; not what a service sees
CLASSIFIER_BUDGET_MS = 2.0
LOOSE_MARGIN = 0.2  # the robustness report's "cut 20% wider" crops: how another detector or a hand frames a face
# The CPU features XNNPACK chooses its int8 kernels by (x86: AMX, VNNI, AVX2; Arm: int8 matrix multiply and dot
# product), best first: the same model's cost per face differs many times over between them.
INT8_FEATURES = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2", "i8mm", "asimddp")


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory in MiB: /proc when there is one, getrusage's peak otherwise."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return peak, peak
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run(
    src: str | None = None,
    config: Config | None = None,
    *,
    frames: int = 300,
    truth: str | Path | None = None,
    out: TextIO = sys.stdout,
) -> dict:
    """Raises TruthError for an unusable truth file (before any frame is read)."""
    pipeline = Pipeline.from_config(config)
    expected = load_truth(truth, pipeline.classifier.labels) if truth else None
    spec = str(src or DEMO_CLIP)
    source_config = (config or Config()).source
    source = open_source(
        spec, width=source_config.width, height=source_config.height, fps=source_config.fps, loop=expected is None
    )
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    faces = []
    reported: list[list[Face]] = []
    resolution = "?"
    wall = cpu = 0.0
    # With truth every frame counts, warm-up included: the first frames are where a face's track starts.
    warmup = 0 if expected is not None else WARMUP
    backfill = Backfill(pipeline.tracker.min_hits)
    try:
        for n in range(len(expected) if expected is not None else max(1, frames) + warmup):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            frame = source.read()
            captured = time.perf_counter()
            if frame is None:
                break
            result = pipeline.process(frame)
            resolution = "{1}x{0}".format(*frame.image.shape)
            for done in backfill.push(result):
                reported.append([(track.box, track.emotion) for track in done.tracks])
            if n < warmup:
                continue
            wall += time.perf_counter() - wall_start
            cpu += time.process_time() - cpu_start
            samples["capture"].append((captured - wall_start) * 1000.0)
            for stage, ms in result.timings_ms.items():
                samples[stage].append(ms)
            faces.append(len(result.tracks))
    finally:
        source.close()
    reported += [[(track.box, track.emotion) for track in done.tracks] for done in backfill.flush()]
    count = len(faces)
    current, peak = rss_mb()
    report = {
        "source": source.name,
        "resolution": resolution,
        "frames": count,
        "faces_per_frame": round(sum(faces) / count, 2),
        "full_scans": round(pipeline.scanner.full_scans / max(1, count + warmup), 3),
        "region_scans": round(pipeline.scanner.region_scans / max(1, count + warmup), 3),
        "fps": round(count / wall, 1),
        "cpu_ms_per_frame": round(cpu * 1000.0 / count, 2),
        "stages_ms": {stage: round(statistics.fmean(values), 2) for stage, values in samples.items()},
        "stages_p95_ms": {stage: round(_p95(values), 2) for stage, values in samples.items()},
        "rss_mb": round(current, 1),
        "peak_rss_mb": round(peak, 1),
        "backend": pipeline.classifier.backend,
        "model_sha256": pipeline.classifier.sha256,
        "machine": machine(),
    }
    if expected is not None:
        report["truth"] = score(expected, reported).as_dict()
    out.write(to_text(report))
    return report


def machine(cpuinfo: str | None = None) -> str:
    """Which CPU a figure was measured on and how busy it was, so that figures from two machines are
    not compared as if from one: the CPU's name (a Pi's board model), its int8 features and the load."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    board = fields.get("model", "")  # a Pi's board; on x86 a number of the family, no name
    name = fields.get("model name") or (board if not board.isdigit() else "") or platform.processor() or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    int8 = ", ".join(feature for feature in INT8_FEATURES if feature in flags) or "none"
    return (
        f"{platform.machine()}, {name}, {os.cpu_count()} CPUs, int8 features: {int8}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def _p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def demo_faces(margin: float = 0.0) -> list[np.ndarray]:
    """The faces of the demo clip's first frame, cut by the detector's boxes grown by ``margin`` a side."""
    source = open_source(str(DEMO_CLIP))
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None, f"{DEMO_CLIP}: no frame"
    height, width = frame.image.shape[:2]
    return [crop(frame.image, grow(box, margin, width, height)) for box in HaarDetector().detect(frame)]


def run_classifier(
    model: str | None = None, *, backend: str = "auto", threads: int = 1, n: int = 500, out: TextIO = sys.stdout
) -> dict[str, Any]:
    classifier = EmotionClassifier.load(model, backend=backend, num_threads=threads)
    faces = demo_faces()
    times = _per_face(classifier, faces, n, reframe=False)
    # What a caller's loose crop costs on top: found again in the crop and cut down (edge.vision.reframe).
    loose = _per_face(classifier, demo_faces(LOOSE_MARGIN), n, reframe=True)
    report = {
        "mean_ms": statistics.fmean(times),
        "median_ms": statistics.median(times),
        "p95_ms": _p95(times),
        "faces": len(times),
        "threads": threads,
        "backend": classifier.backend,
        "input": classifier.input_size,
        "face_size": faces[0].shape[0],
        "loose_median_ms": statistics.median(loose),
        "machine": machine(),
    }
    verdict = "within" if report["median_ms"] <= CLASSIFIER_BUDGET_MS else "OVER"
    out.write(
        f"{report['median_ms']:.3f} ms/face median, {report['mean_ms']:.3f} mean, {report['p95_ms']:.3f} p95 "
        f"({report['faces']} faces of {report['face_size']} px -> {report['input']} px, {threads} thread(s), "
        f"{report['backend']}); {verdict} the {CLASSIFIER_BUDGET_MS:g} ms budget\n"
        f"{report['loose_median_ms']:.3f} ms/face median for crops {LOOSE_MARGIN:.0%} wider a side, reframed first "
        "(predict's default; the pipeline's own crops skip it)\n"
        f"machine: {report['machine']}\n"
    )
    return report


def _per_face(classifier: EmotionClassifier, faces: list[np.ndarray], n: int, *, reframe: bool) -> list[float]:
    """Milliseconds of ``n`` single-face predictions, cycling through ``faces``, after a warm-up."""
    for face in faces * WARMUP:
        classifier.predict([face], reframe=reframe)
    times = []
    for i in range(max(1, n)):
        started = time.perf_counter()
        classifier.predict([faces[i % len(faces)]], reframe=reframe)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def to_text(report: dict[str, Any]) -> str:
    stages = "  ".join(f"{s} {report['stages_ms'][s]:.2f} (p95 {report['stages_p95_ms'][s]:.2f})" for s in STAGES)
    return (
        f"source: {report['source']} ({report['resolution']}, {report['faces_per_frame']} faces/frame, "
        f"{report['frames']} frames)\n"
        f"fps: {report['fps']}  (cpu {report['cpu_ms_per_frame']} ms/frame)\n"
        f"ms per frame: {stages}\n"
        f"scans: full frame on {report['full_scans']:.0%} of frames, changed regions on {report['region_scans']:.0%}\n"
        f"memory: rss {report['rss_mb']} MiB, peak {report['peak_rss_mb']} MiB\n"
        f"classifier: {report['backend']}, model {report['model_sha256'][:12]}\n"
        f"machine: {report['machine']}\n" + (truth_text(report["truth"]) if "truth" in report else "")
    )
