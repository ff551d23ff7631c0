"""Truth clips: 640x480 videos of FER-2013 PublicTest faces, with the box and label of every face on every frame.

``emotion-edge bench SRC --truth TRUTH.json`` needs clips whose right answers are known, and the only
labelled faces we may test on are PublicTest's (never the training faces the model learnt from). So this
module lays those faces onto synthetic scenes that make a live camera's problems: people who come, go and
move; a new face in the spot another has just left; a face that changes expression (a cut to a photo of
another class in the same place); a face partly out of the frame; several backgrounds; and what a cheap
camera does to a picture (blur, sensor noise, JPEG, dim and uneven light).

FER's faces are tight 48x48 crops, and a Haar cascade looks for a face *in* a head: a bare square of face on
a wall has no brow, hair, ears or chin line around it. So each face is upscaled and set into a drawn head
(skin-toned oval with hair and neck, on shoulders), its square edges feathered into it. The truth box is the
square the face crop fills, which is how FER-2013 framed its faces and so what the classifier expects.

Everything is drawn from one seed, so a clip can be made again bit for bit (given the same OpenCV):
``python -m training.truthclips DATA/fer2013/test OUT_DIR --seed 1 --frames 120`` writes ``clip.mp4`` and
``clip.truth.json`` (a JSON list, one entry per frame, each a list of ``{"box": [x, y, w, h], "label": ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.vision.emotions import EMOTIONS

WIDTH, HEIGHT, FPS = 640, 480, 15.0
MIN_FACE, MAX_FACE = 50, 220
CHECK_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")


@dataclass
class Person:
    face: np.ndarray  # the FER crop, 48x48 gray
    label: str
    x: float  # top-left of the face square, full-resolution pixels
    y: float
    size: int
    vx: float  # drift in pixels per frame
    vy: float
    tint: tuple[float, float, float]  # BGR multipliers: gray faces in a colour picture
    shirt: tuple[int, int, int]
    hair: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return round(self.x), round(self.y), self.size, self.size


@dataclass
class Camera:
    """What the sensor and encoder do to a frame; changes now and then within a clip, as light does."""

    blur: float  # Gaussian sigma in pixels, 0 = sharp
    noise: float  # sensor noise sigma in grey levels
    jpeg: int  # quality 0-100, 100 = no re-encoding
    gain: float  # overall brightness
    slope: float  # uneven light: brightness changes by this fraction from one side to the other
    angle: float


def load_faces(folder: Path) -> dict[str, list[Path]]:
    """PublicTest's photos by class; refuses a training folder, whose faces the model has learnt."""
    if "train" in folder.name.lower():
        raise SystemExit(f"{folder}: truth clips are made from test faces only, not training faces")
    faces = {label: sorted((folder / label).glob("*.jpg")) for label in EMOTIONS}
    missing = [label for label, paths in faces.items() if not paths]
    if missing:
        raise SystemExit(f"{folder}: no faces for {', '.join(missing)} (expected {folder}/<class>/*.jpg)")
    return faces


def background(rng: np.random.Generator) -> np.ndarray:
    """A room-like backdrop: a lit wall gradient, blurred furniture blocks, a texture, maybe curtain folds."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    a, b = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1)) / (WIDTH + HEIGHT) + 0.5
    image = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    for _ in range(rng.integers(2, 7)):
        x0, y0 = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
        w, h = rng.integers(40, 300), rng.integers(40, 300)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(20, 235, 3)
    if rng.random() < 0.4:  # curtain folds: the stripes a Haar cascade likes to see faces in
        period = rng.uniform(12, 40)
        folds = 0.75 + 0.25 * np.sin(xs * 2 * np.pi / period + 2 * np.sin(ys / 60))
        image *= folds[..., None]
    texture = cv2.resize(rng.normal(0, 1, (HEIGHT // 16, WIDTH // 16)).astype(np.float32), (WIDTH, HEIGHT))
    image += texture[..., None] * rng.uniform(4, 14)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 3.0))
    return np.clip(image, 0, 255).astype(np.float32)


class FrontalCheck:
    """Whether a photo shows a face a camera on a wall would see: one that OpenCV's two frontal cascades
    (``default``, the one the ``fer`` package uses, or ``alt2``, this project's) find on the clean photo.

    About a fifth of PublicTest is profiles, hands over faces, drawings or crops no frontal detector finds
    (docs/pipeline.md); a clip full of those would measure the photos, not the pipeline.
    The filter treats both detectors alike, and what remains is put through scale, context, motion and a
    bad camera, which is what the truth clips are for."""

    def __init__(self) -> None:
        root = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        self._cascades = [cv2.CascadeClassifier(str(root / name)) for name in CHECK_CASCADES]
        self._known: dict[Path, bool] = {}

    def __call__(self, path: Path, face: np.ndarray) -> bool:
        if path not in self._known:
            big = cv2.resize(face, (144, 144), interpolation=cv2.INTER_CUBIC)
            big = cv2.copyMakeBorder(big, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
            self._known[path] = any(len(c.detectMultiScale(big, 1.1, 3, minSize=(60, 60))) for c in self._cascades)
        return self._known[path]


def random_person(
    rng: np.random.Generator, faces: dict[str, list[Path]], frontal: FrontalCheck, label: str | None = None
) -> Person:
    label = label or EMOTIONS[rng.integers(len(EMOTIONS))]
    while True:
        path = faces[label][rng.integers(len(faces[label]))]
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if face is None:
            raise SystemExit(f"{path}: not a readable image")
        if frontal(path, face):
            break
    return dressed(rng, face, label)


def dressed(rng: np.random.Generator, face: np.ndarray, label: str) -> Person:
    """A person around ``face``: a skin tint for the gray photo, a shirt and hair, not yet placed."""
    skin = rng.uniform(0.75, 1.0)
    tint = (skin * rng.uniform(0.80, 0.92), skin * rng.uniform(0.90, 0.98), skin * 1.0)
    shirt = tuple(int(c) for c in rng.integers(10, 240, 3))
    return Person(face, label, 0, 0, MIN_FACE, 0, 0, tint, shirt, int(rng.integers(10, 90)))  # type: ignore[arg-type]


def draw_person(canvas: np.ndarray, person: Person) -> None:
    """The face square set into a head on shoulders, drawn in place on ``canvas`` (float BGR)."""
    x, y, s = person.x, person.y, person.size
    cx, cy = x + s / 2, y + s / 2
    skin = float(np.median(person.face[28:44, 10:38]))  # cheeks and chin: the face's own skin tone
    tint = np.array(person.tint, np.float32)
    layer = np.zeros_like(canvas)
    alpha = np.zeros(canvas.shape[:2], np.float32)
    shirt = tuple(float(c) for c in person.shirt)

    skin_bgr = tuple(float(c) for c in skin * tint)
    neck_bgr = tuple(float(c) * 0.85 for c in skin_bgr)
    # shoulders, neck, the hair behind the head, then the head: (centre, axes) ellipses, drawn in order
    parts = [
        ((cx, cy + 1.45 * s), (1.1 * s, 0.6 * s), shirt),
        ((cx, cy + 0.75 * s), (0.22 * s, 0.4 * s), neck_bgr),
        ((cx, cy - 0.1 * s), (0.62 * s, 0.72 * s), (float(person.hair),) * 3),
        ((cx, cy + 0.02 * s), (0.56 * s, 0.64 * s), skin_bgr),
    ]
    for (px, py), (ax, ay), colour in parts:
        centre, axes = (int(px), int(py)), (int(ax), int(ay))
        cv2.ellipse(layer, centre, axes, 0, 0, 360, colour, -1)
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
    soft = cv2.GaussianBlur(alpha, (0, 0), max(1.0, s / 60))[..., None]
    canvas *= 1 - soft
    canvas += cv2.GaussianBlur(layer, (0, 0), max(1.0, s / 60))  # premultiplied by alpha already
    # the face itself, feathered over its outer eighth so no square edge shows
    face = cv2.resize(person.face, (s, s), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    ramp = np.minimum(np.arange(s) + 1, np.arange(s)[::-1] + 1) / max(1.0, s / 8)
    mask = np.clip(np.minimum(ramp[None, :], ramp[:, None]), 0, 1)
    x0, y0 = round(x), round(y)
    fx0, fy0 = max(0, -x0), max(0, -y0)
    fx1, fy1 = min(s, WIDTH - x0), min(s, HEIGHT - y0)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    region = canvas[y0 + fy0 : y0 + fy1, x0 + fx0 : x0 + fx1]
    m = mask[fy0:fy1, fx0:fx1, None]
    region *= 1 - m
    region += face[fy0:fy1, fx0:fx1, None] * tint * m


def place(rng: np.random.Generator, people: list[Person], person: Person, out_of_frame: bool = False) -> bool:
    """Picks a size and a spot for ``person`` clear of ``people``'s heads; False when none fits."""
    for _ in range(50):
        size = int(rng.integers(MIN_FACE, MAX_FACE + 1))
        if out_of_frame:  # a third to a half of the face beyond the left or right edge
            cut = rng.uniform(0.3, 0.5) * size
            x = -cut if rng.random() < 0.5 else WIDTH - size + cut
        else:
            x = rng.uniform(0.3 * size, WIDTH - 1.3 * size)
        y = rng.uniform(0.4 * size, max(0.4 * size + 1, HEIGHT - 1.2 * size))
        if all(_apart((x, y, size), (p.x, p.y, p.size)) for p in people):
            person.x, person.y, person.size = x, y, size
            person.vx, person.vy = rng.normal(0, 1.0), rng.normal(0, 0.5)
            return True
    return False


def _apart(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """Heads (1.3x the face) do not overlap."""
    ax, ay, asz = a
    bx, by, bsz = b
    return abs((ax + asz / 2) - (bx + bsz / 2)) > 0.65 * (asz + bsz) or abs((ay + asz / 2) - (by + bsz / 2)) > 0.8 * (
        asz + bsz
    )


def random_camera(rng: np.random.Generator) -> Camera:
    rough = rng.random() < 0.5
    return Camera(
        blur=float(rng.uniform(0.6, 1.8)) if rough else float(rng.uniform(0, 0.6)),
        noise=float(rng.uniform(3, 9)) if rough else float(rng.uniform(0, 3)),
        jpeg=int(rng.integers(25, 60)) if rough else 95,
        gain=float(rng.uniform(0.45, 0.75)) if rng.random() < 0.3 else float(rng.uniform(0.85, 1.1)),
        slope=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.4 else 0.0,
        angle=float(rng.uniform(0, 2 * np.pi)),
    )


def shoot(canvas: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    along = ((xs - WIDTH / 2) * np.cos(camera.angle) + (ys - HEIGHT / 2) * np.sin(camera.angle)) / WIDTH
    image = canvas * (camera.gain * (1 + camera.slope * along))[..., None]
    if camera.blur > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), camera.blur)
    image += rng.normal(0, camera.noise, image.shape).astype(np.float32) if camera.noise > 0 else 0
    frame = np.clip(image, 0, 255).astype(np.uint8)
    if camera.jpeg < 100:
        _, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg])
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return frame


def truth_box(person: Person) -> list[int] | None:
    """The visible part of the face square; None when less than half of it is in the frame."""
    x, y, s = round(person.x), round(person.y), person.size
    x0, y0, x1, y1 = max(0, x), max(0, y), min(WIDTH, x + s), min(HEIGHT, y + s)
    if (x1 - x0) * (y1 - y0) < 0.5 * s * s:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def make_clip(faces: dict[str, list[Path]], seed: int, frames: int = 120) -> tuple[list[np.ndarray], list[list[dict]]]:
    """The frames and their truth. Every 0.4-1.0 s something happens: the arrangement changes, a person is
    replaced in place by another (or the same spot shows a photo of another class: an expression change),
    someone leaves or arrives, the light or camera changes; now and then a face is partly out of frame."""
    rng = np.random.default_rng(seed)
    frontal = FrontalCheck()
    backdrops = [background(rng) for _ in range(3)]
    scene = backdrops[0]
    camera = random_camera(rng)
    people: list[Person] = []
    images, truth = [], []
    next_change = 0
    for n in range(frames):
        if n == next_change:
            people, scene, camera = _change(rng, faces, frontal, people, scene, camera, backdrops, first=n == 0)
            next_change = n + int(rng.integers(round(0.4 * FPS), round(1.0 * FPS) + 1))
        canvas = scene.copy()
        for person in people:
            draw_person(canvas, person)
        images.append(shoot(canvas, camera, rng))
        truth.append([{"box": box, "label": p.label} for p in people if (box := truth_box(p)) is not None])
        for person in people:  # drift, turning back at the frame's edges
            person.x += person.vx
            person.y += person.vy
            if not -0.5 * person.size < person.x < WIDTH - 0.5 * person.size:
                person.vx = -person.vx
            if not 0 < person.y < HEIGHT - person.size:
                person.vy = -person.vy
    return images, truth


def _change(rng, faces, frontal, people, scene, camera, backdrops, first=False):
    what = (
        "arrange"
        if first or not people
        else rng.choice(["arrange", "replace", "replace", "expression", "leave", "arrive", "camera", "edge"])
    )
    if what == "arrange":
        people = []
        scene = backdrops[rng.integers(len(backdrops))]
        for _ in range(rng.integers(1, 4)):
            person = random_person(rng, faces, frontal)
            if place(rng, people, person):
                people.append(person)
    elif what in ("replace", "expression"):  # same spot and size, another photo
        old = people[rng.integers(len(people))]
        others = [label for label in EMOTIONS if label != old.label]
        new = random_person(rng, faces, frontal, rng.choice(others) if what == "expression" else None)
        if what == "expression":  # the same person: same skin, hair and shirt
            new.tint, new.shirt, new.hair = old.tint, old.shirt, old.hair
        new.x, new.y, new.size, new.vx, new.vy = old.x, old.y, old.size, old.vx, old.vy
        people = [new if p is old else p for p in people]
    elif what == "leave" and len(people) > 1:
        people = [p for p in people if p is not people[rng.integers(len(people))]]
    elif what in ("arrive", "edge", "leave") and len(people) < 3:
        person = random_person(rng, faces, frontal)
        if place(rng, people, person, out_of_frame=what == "edge"):
            people = [*people, person]
    else:
        camera = random_camera(rng)
    return people, scene, camera


def write_clip(images: Sequence[np.ndarray], truth: list[list[dict]], video: Path) -> Path:
    video.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"{video}: cannot write a video here")
    for image in images:
        writer.write(image)
    writer.release()
    path = video.with_suffix(".truth.json")
    path.write_text(json.dumps(truth, separators=(",", ":")) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.truthclips", description=__doc__.split("\n")[0])
    parser.add_argument("faces", type=Path, help="FER-2013 test folder (<class>/*.jpg), PublicTest only")
    parser.add_argument("out", type=Path, help="folder for NAME.mp4 and NAME.truth.json")
    parser.add_argument("--seed", type=int, action="append", help="one clip per seed (repeatable; default 1)")
    parser.add_argument("--frames", type=int, default=120, help="frames per clip (120 = 8 s at 15 fps)")
    parser.add_argument("--name", default="truth", help="clip names: NAME-SEED.mp4")
    args = parser.parse_args(argv)
    faces = load_faces(args.faces)
    for seed in args.seed or [1]:
        images, truth = make_clip(faces, seed, args.frames)
        path = write_clip(images, truth, args.out / f"{args.name}-{seed}.mp4")
        count = sum(len(t) for t in truth)
        print(f"{path.with_suffix('').with_suffix('.mp4')}: {len(images)} frames, {count} faces; truth in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
