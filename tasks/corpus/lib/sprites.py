"""Subjects as small shape compositions, one drawer per noun, so a caption can name what is seen.

Each sprite is drawn in units of its own height (``u``) with a colour image and an alpha mask painted
together; the anchor is its bottom centre (feet, wheels, base), which is where it stands in a scene.
Category shares follow the report's concept statistics (section 3.1: about 85% of clips are
human-centred); the rest spread over scenery, animals, vehicles, architecture and objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from tasks.corpus.lib.truth import Category

CATEGORY_WEIGHTS: dict[Category, float] = {
    "human": 0.85, "scenery": 0.05, "animal": 0.04, "vehicle": 0.025, "architecture": 0.02, "object": 0.015,
}
NAMES: dict[Category, tuple[str, ...]] = {
    "human": ("woman", "man", "girl", "boy", "old man", "dancer", "chef", "soldier"),
    "animal": ("dog", "cat", "horse", "cow", "bird"),
    "vehicle": ("car", "bus", "truck", "bicycle", "boat"),
    "scenery": ("mountain", "tree", "sunset"),
    "architecture": ("house", "tower", "skyscraper", "bridge"),
    "object": ("cup", "ball", "lamp", "bottle", "clock"),
}
# Main-subject height as a fraction of the frame height, and width per unit of height.
HEIGHT_RANGE: dict[Category, tuple[float, float]] = {
    "human": (0.5, 0.85), "animal": (0.3, 0.5), "vehicle": (0.25, 0.4), "scenery": (0.45, 0.8),
    "architecture": (0.45, 0.9), "object": (0.25, 0.4),
}
ASPECT = {
    "woman": 0.5, "man": 0.5, "girl": 0.5, "boy": 0.5, "old man": 0.5, "dancer": 0.6, "chef": 0.5, "soldier": 0.5,
    "dog": 1.4, "cat": 1.3, "horse": 1.5, "cow": 1.6, "bird": 1.2, "car": 2.2, "bus": 2.8, "truck": 2.4,
    "bicycle": 1.6, "boat": 1.6, "mountain": 2.5, "tree": 0.8, "sunset": 2.0, "house": 1.1, "tower": 0.35,
    "skyscraper": 0.4, "bridge": 3.0, "cup": 0.9, "ball": 1.0, "lamp": 0.6, "bottle": 0.4, "clock": 1.0,
}
CHILDREN = {"girl": 0.7, "boy": 0.7}  # drawn smaller than adults
MOVES: dict[Category, float] = {"human": 0.2, "animal": 0.3, "vehicle": 0.6}  # max screen travel / frame width


@dataclass(frozen=True, eq=False)
class Sprite:
    bgr: np.ndarray  # uint8 (h, w, 3)
    alpha: np.ndarray  # float32 (h, w) in [0, 1]


class _Pen:
    """Draws into colour and mask at once; coordinates are in units of the sprite height."""

    def __init__(self, height: int, aspect: float):
        self.u = height
        self.img = np.zeros((height, max(2, round(height * aspect)), 3), np.uint8)
        self.mask = np.zeros(self.img.shape[:2], np.uint8)
        self.cx = self.img.shape[1] / self.u / 2  # horizontal centre, in units

    def _px(self, *values: float) -> list[int]:
        return [round(v * self.u) for v in values]

    def _both(self, fn: Callable, color, *args, **kwargs) -> None:
        fn(self.img, *args, color=tuple(int(c) for c in color), lineType=cv2.LINE_AA, **kwargs)
        fn(self.mask, *args, color=255, lineType=cv2.LINE_AA, **kwargs)

    def ellipse(self, x, y, rx, ry, color, angle=0.0) -> None:
        cx, cy, ax, ay = self._px(x, y, rx, ry)
        self._both(cv2.ellipse, color, (cx, cy), (max(ax, 1), max(ay, 1)), angle, 0, 360, thickness=-1)

    def poly(self, points, color) -> None:
        self._both(cv2.fillPoly, color, [np.array([self._px(x, y) for x, y in points], np.int32)])

    def rect(self, x0, y0, x1, y1, color) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color)

    def line(self, x0, y0, x1, y1, width, color) -> None:
        self._both(cv2.line, color, tuple(self._px(x0, y0)), tuple(self._px(x1, y1)),
                   thickness=max(1, round(width * self.u)))

    def sprite(self) -> Sprite:
        return Sprite(self.img, self.mask.astype(np.float32) / 255)


def _tone(rng: np.random.Generator, lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


SKIN = ((60, 90, 140), (90, 140, 200), (120, 170, 225), (150, 195, 235))


def _human(p: _Pen, rng, name: str) -> None:
    c = p.cx
    skin, cloth, legs = SKIN[rng.integers(len(SKIN))], _tone(rng), _tone(rng, 20, 140)
    swing = rng.uniform(-0.08, 0.08)
    if name in ("woman", "girl", "dancer"):  # a dress, bare legs
        p.line(c - 0.05, 0.6, c - 0.07 - swing, 0.97, 0.05, skin)
        p.line(c + 0.05, 0.6, c + 0.07 + swing, 0.97, 0.05, skin)
        p.poly([(c - 0.1, 0.24), (c + 0.1, 0.24), (c + 0.2, 0.68), (c - 0.2, 0.68)], cloth)
    else:
        p.line(c - 0.05, 0.55, c - 0.08 - swing, 0.97, 0.08, legs)
        p.line(c + 0.05, 0.55, c + 0.08 + swing, 0.97, 0.08, legs)
        p.rect(c - 0.12, 0.24, c + 0.12, 0.58, (40, 90, 40) if name == "soldier" else cloth)
    arm_y = 0.5 if name != "dancer" else 0.08  # dancers raise their arms
    for side in (-1, 1):
        p.line(c + side * 0.11, 0.27, c + side * (0.19 + swing), arm_y, 0.05, cloth)
        p.ellipse(c + side * (0.19 + swing), arm_y, 0.03, 0.03, skin)
    p.ellipse(c, 0.14, 0.075, 0.09, skin)
    hair = (200, 200, 200) if name == "old man" else _tone(rng, 10, 90)
    p.ellipse(c, 0.085, 0.08, 0.045, hair)
    if name == "chef":
        p.rect(c - 0.07, -0.01, c + 0.07, 0.07, (245, 245, 245))
    if name == "soldier":
        p.ellipse(c, 0.08, 0.095, 0.05, (40, 80, 40))


def _animal(p: _Pen, rng, name: str) -> None:
    w = 2 * p.cx
    coat = {"dog": (40, 80, 140), "cat": (110, 110, 120), "horse": (30, 50, 90), "cow": (235, 235, 235)}.get(
        name, _tone(rng))
    if name == "bird":
        p.ellipse(w * 0.45, 0.55, w * 0.28, 0.22, coat)
        p.poly([(w * 0.35, 0.5), (w * 0.6, 0.5), (w * 0.4, 0.12)], _tone(rng))  # raised wing
        p.ellipse(w * 0.75, 0.4, 0.13, 0.13, coat)
        p.poly([(w * 0.84, 0.37), (w * 0.98, 0.42), (w * 0.84, 0.46)], (20, 160, 230))
        p.line(w * 0.42, 0.75, w * 0.42, 0.98, 0.03, (20, 100, 160))
        return
    for x in (0.25, 0.35, 0.62, 0.72):  # four legs under the body
        p.line(w * x, 0.5, w * x, 0.97, 0.07, coat)
    p.ellipse(w * 0.48, 0.45, w * 0.3, 0.2, coat)
    if name == "cow":
        for _ in range(3):
            p.ellipse(w * rng.uniform(0.3, 0.65), rng.uniform(0.35, 0.55), 0.08, 0.06, (20, 20, 20))
    p.ellipse(w * 0.82, 0.28, 0.15, 0.13, coat)
    p.poly([(w * 0.78, 0.2), (w * 0.82, 0.05), (w * 0.86, 0.2)], coat)  # ear
    p.line(w * 0.18, 0.38, w * 0.05, 0.2, 0.04, coat)  # tail
    p.ellipse(w * 0.86, 0.26, 0.02, 0.02, (10, 10, 10))


def _vehicle(p: _Pen, rng, name: str) -> None:
    w, paint, glass, wheel = 2 * p.cx, _tone(rng), (200, 170, 120), (25, 25, 25)
    if name == "bicycle":
        for x in (0.22, 0.78):
            p.ellipse(w * x, 0.7, 0.28, 0.28, wheel)
            p.ellipse(w * x, 0.7, 0.22, 0.22, (0, 0, 0))  # rim hole stays painted dark, not transparent
        for x0, y0, x1, y1 in ((0.22, 0.7, 0.5, 0.7), (0.5, 0.7, 0.4, 0.35), (0.4, 0.35, 0.22, 0.7),
                               (0.4, 0.35, 0.7, 0.35), (0.7, 0.35, 0.78, 0.7), (0.7, 0.35, 0.7, 0.2)):
            p.line(w * x0, y0, w * x1, y1, 0.04, paint)
        return
    if name == "boat":
        p.poly([(0, 0.65), (w, 0.65), (w * 0.85, 0.98), (w * 0.15, 0.98)], paint)
        p.line(w * 0.5, 0.65, w * 0.5, 0.02, 0.04, (60, 60, 60))
        p.poly([(w * 0.52, 0.05), (w * 0.52, 0.6), (w * 0.9, 0.6)], (240, 240, 240))
        return
    cabin_top = 0.05 if name == "bus" else 0.2
    if name == "truck":
        p.rect(0, 0.05, w * 0.68, 0.82, paint)
        p.rect(w * 0.7, 0.3, w, 0.82, _tone(rng))
        p.rect(w * 0.78, 0.38, w * 0.96, 0.55, glass)
    else:
        p.rect(0, 0.45, w, 0.82, paint)
        p.poly([(w * 0.2, 0.45), (w * 0.3, cabin_top), (w * 0.75, cabin_top), (w * 0.85, 0.45)], paint)
        n_windows = 6 if name == "bus" else 2
        for k in range(n_windows):
            x0 = 0.27 + 0.54 * k / n_windows
            p.rect(w * (x0 + 0.01), cabin_top + 0.05, w * (x0 + 0.54 / n_windows - 0.01), 0.42, glass)
    for x in (0.2, 0.8):
        p.ellipse(w * x, 0.82, 0.16, 0.16, wheel)
        p.ellipse(w * x, 0.82, 0.06, 0.06, (170, 170, 170))


def _scenery(p: _Pen, rng, name: str) -> None:
    w = 2 * p.cx
    if name == "mountain":
        for x, top, span in ((0.3, 0.05, 0.35), (0.65, 0.2, 0.3), (0.12, 0.35, 0.2)):
            rock = _tone(rng, 60, 140)
            p.poly([(w * (x - span), 1.0), (w * x, top), (w * (x + span), 1.0)], rock)
            p.poly([(w * x - w * span * 0.25, top + 0.2), (w * x, top), (w * x + w * span * 0.25, top + 0.2)],
                   (245, 245, 245))
    elif name == "tree":
        p.rect(w * 0.43, 0.55, w * 0.57, 1.0, (30, 60, 100))
        for x, y, r in ((0.5, 0.25, 0.22), (0.32, 0.42, 0.18), (0.68, 0.42, 0.18)):
            p.ellipse(w * x, y, r, r, (40, rng.integers(110, 190), 40))
    else:  # sunset: sun over banded water
        p.ellipse(w * 0.5, 0.45, 0.35, 0.35, (60, 140, 250))
        for k in range(5):
            p.rect(0, 0.6 + k * 0.08, w, 0.64 + k * 0.08, (120 - 15 * k, 60 + 10 * k, 30))


def _architecture(p: _Pen, rng, name: str) -> None:
    w, wall, glass = 2 * p.cx, _tone(rng, 80, 220), (60, 200, 240)
    if name == "bridge":
        p.rect(0, 0.3, w, 0.42, wall)
        for k in range(4):
            p.rect(w * (0.1 + 0.25 * k), 0.42, w * (0.15 + 0.25 * k), 1.0, wall)
        return
    roof = 0.25 if name in ("house", "tower") else 0.0
    p.rect(0, roof, w, 1.0, wall)
    if roof:
        p.poly([(-0.05 * w, roof), (w * 0.5, 0.0), (1.05 * w, roof)], (40, 50, 150))
    cols = 3 if name == "house" else 2
    rows = 2 if name == "house" else 9
    for r in range(rows):
        for k in range(cols):
            x0, y0 = (k + 0.25) / cols, roof + 0.05 + (1 - roof - 0.1) * r / rows
            p.rect(w * x0, y0, w * (x0 + 0.5 / cols), y0 + (1 - roof - 0.1) / rows * 0.6, glass)


def _object(p: _Pen, rng, name: str) -> None:
    w, body = 2 * p.cx, _tone(rng)
    if name == "ball":
        p.ellipse(w / 2, 0.5, 0.48, 0.48, body)
        p.line(w * 0.1, 0.5, w * 0.9, 0.5, 0.05, (250, 250, 250))
    elif name == "clock":
        p.ellipse(w / 2, 0.5, 0.48, 0.48, (40, 40, 40))
        p.ellipse(w / 2, 0.5, 0.42, 0.42, (240, 240, 240))
        p.line(w / 2, 0.5, w / 2, 0.18, 0.04, (20, 20, 20))
        p.line(w / 2, 0.5, w * 0.72, 0.55, 0.04, (20, 20, 20))
    elif name == "lamp":
        p.poly([(w * 0.15, 0.4), (w * 0.3, 0.0), (w * 0.7, 0.0), (w * 0.85, 0.4)], body)
        p.line(w / 2, 0.4, w / 2, 0.95, 0.05, (80, 80, 80))
        p.rect(w * 0.2, 0.92, w * 0.8, 1.0, (80, 80, 80))
    elif name == "bottle":
        p.rect(0, 0.35, w, 1.0, body)
        p.rect(w * 0.3, 0.0, w * 0.7, 0.38, body)
    else:  # cup
        p.ellipse(w * 0.8, 0.5, 0.2, 0.2, body)
        p.ellipse(w * 0.8, 0.5, 0.1, 0.1, (30, 30, 30))
        p.rect(0, 0.15, w * 0.78, 1.0, body)


DRAWERS: dict[Category, Callable] = {
    "human": _human, "animal": _animal, "vehicle": _vehicle, "scenery": _scenery,
    "architecture": _architecture, "object": _object,
}


def sample_category(rng: np.random.Generator) -> Category:
    return str(rng.choice(list(CATEGORY_WEIGHTS), p=list(CATEGORY_WEIGHTS.values())))


def draw_subject(rng: np.random.Generator, category: Category, name: str, height: int) -> Sprite:
    pen = _Pen(max(8, round(height * CHILDREN.get(name, 1.0))), ASPECT[name])
    DRAWERS[category](pen, rng, name)
    return pen.sprite()
