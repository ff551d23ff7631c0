"""The package as pip builds it: a wheel from a clean copy of the tracked files, installed away from the
checkout, carries the shipped model and its card (not the float training weights) and classifies a face."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import cv2
from helpers import REPO

from edge.recognizer import EmotionRecognizer

FACE = REPO / "tests" / "fixtures" / "media" / "one_face.jpg"


def tracked_copy(target: Path) -> Path:
    """The files git tracks (what a clone has), with any uncommitted edits: the build sees no local leftovers."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, names):
        source = REPO / name
        if source.is_symlink():  # edge/models -> ../models
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).symlink_to(os.readlink(source))
        elif source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


def test_wheel_installed_outside_the_checkout_classifies_a_face(tmp_path):
    """About 5 s: build (no build isolation: this venv's setuptools and wheel, nothing downloaded), install
    with --no-deps into a fresh venv that sees this venv's dependencies through a .pth, classify."""
    source = tracked_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = dist.glob("emotion_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"edge/models/emotion_int8.tflite", "edge/models/emotion_int8.json", "edge/tools/demo.mp4"} <= set(names)
    assert not [n for n in names if n.endswith(".keras") or n.startswith("models/")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    installed = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(installed), str(wheel)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # Run with -I (no PYTHONPATH, no checkout on the path). The installed package comes first, then this
    # venv's numpy/OpenCV/LiteRT; .pth files in a directory added this way (such as the editable install
    # pointing at a checkout) are not read.
    Path(site, "deps.pth").write_text(f"{installed}\n{sysconfig.get_paths()['purelib']}\n")
    code = (
        "import cv2, edge, sys; from edge.recognizer import EmotionRecognizer; "
        "r = EmotionRecognizer(); print(edge.__file__); print(r.classifier.sha256); "
        f"print(r.top_emotion(cv2.imread({str(FACE)!r})))"
    )
    done = subprocess.run([python, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    where, sha, top = done.stdout.splitlines()
    assert Path(where).is_relative_to(installed)
    here = EmotionRecognizer()
    assert sha == here.classifier.sha256
    assert top == str(here.top_emotion(cv2.imread(str(FACE))))
