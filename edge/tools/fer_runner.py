"""The ``fer`` package's side of ``edge/tools/fer_peer.py``; runs in fer's own venv (it needs TensorFlow).

``fer_runner.py CLIP`` prints one JSON line per frame of CLIP, ``[{"box": [x, y, w, h], "label": ...}, ...]``;
``fer_runner.py --photos`` reads image paths from stdin, one a line, and prints the same line per photo. Then
one line ``{"frames": N, "wall_s": ..., "cpu_s": ...}``: the time ``FER.detect_emotions`` took over all frames
or photos, decoding excluded (they are read into memory first), after one warm-up call.
"""

import json
import sys
import time

import cv2
from fer.fer import FER  # only in fer's own venv


def read_frames(clip: str) -> list:
    capture = cv2.VideoCapture(clip)
    frames: list = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


def main() -> int:
    if sys.argv[1] == "--photos":
        paths = sys.stdin.read().splitlines()
        frames = [cv2.imread(path) for path in paths]
        missing = [path for path, image in zip(paths, frames) if image is None]
        if missing:
            print(f"{missing[0]}: not a readable image", file=sys.stderr)
            return 1
    else:
        frames = read_frames(sys.argv[1])
    if not frames:
        print(f"{sys.argv[1]}: no frames", file=sys.stderr)
        return 1
    detector = FER()  # the package's defaults: its Haar cascade (not MTCNN) and its TFLite model
    detector.detect_emotions(frames[0])
    rows = []
    wall, cpu = time.perf_counter(), time.process_time()
    for image in frames:
        faces = detector.detect_emotions(image)
        rows.append(
            [{"box": [int(v) for v in f["box"]], "label": max(f["emotions"], key=f["emotions"].get)} for f in faces]
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"frames": len(frames), "wall_s": wall, "cpu_s": cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
