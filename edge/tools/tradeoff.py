"""Speed against recall: ``bench --truth`` over truth clips for a few settings, as one markdown table.

    python -m edge.tools.tradeoff [CLIP.mp4 ...]   (default: the committed tests/fixtures/truth/*.mp4)

Each row overrides the defaults with the settings it names (``section.key=value``) and sums the truth
scores over the clips; fps and CPU ms are the means over the clips (capture included, as ``bench``
prints them). The rows are the ones docs/pipeline.md discusses; a benchmark, not a test.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from edge.config import load
from edge.tools import bench

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("full scan every frame", {"detector.full_scan_interval": 0}),
    ("full scan every 0.5 s", {"detector.full_scan_interval": 0.5}),
    ("full scan every 2 s", {"detector.full_scan_interval": 2.0}),
    ("no change test", {"detector.motion_threshold": 0}),
    ("no hold", {"tracker.hold": 0}),
    ("classify every frame", {"tracker.reclassify": 0}),
    ("min_neighbors 5", {"detector.min_neighbors": 5}),
    ("detect_width 480, scale_factor 1.15", {"detector.detect_width": 480, "detector.scale_factor": 1.15}),
    (
        "before: every frame, 320 px, min_neighbors 5, no hold",
        {
            "detector.full_scan_interval": 0,
            "detector.min_neighbors": 5,
            "tracker.hold": 0,
            "tracker.reclassify": 0,
            "tracker.appearance": 0,
        },
    ),
]


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    clips = [Path(c) for c in sys.argv[1:]] or sorted((root / "tests" / "fixtures" / "truth").glob("*.mp4"))
    print(f"clips: {', '.join(c.name for c in clips)}; load average {os.getloadavg()[0]:.2f}")
    print("| settings | recall | precision | labelled right | end-to-end | fps | CPU ms/frame | full scans |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, overrides in ROWS:
        config = load(None, overrides=overrides, env={})
        reports = [
            bench.run(str(clip), config, truth=clip.with_suffix(".truth.json"), out=io.StringIO()) for clip in clips
        ]
        faces = sum(r["truth"]["faces"] for r in reports)
        reported = sum(r["truth"]["reported"] for r in reports)
        found = sum(round(r["truth"]["recall"] * r["truth"]["faces"]) for r in reports)
        right = sum(round(r["truth"]["end_to_end"] * r["truth"]["faces"]) for r in reports)
        print(
            f"| {name} | {found / faces:.3f} | {found / max(1, reported):.3f} | {right / max(1, found):.3f} | "
            f"{right / faces:.3f} | {statistics.fmean(r['fps'] for r in reports):.0f} | "
            f"{statistics.fmean(r['cpu_ms_per_frame'] for r in reports):.1f} | "
            f"{statistics.fmean(r['full_scans'] for r in reports):.0%} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
