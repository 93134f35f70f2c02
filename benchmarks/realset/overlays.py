"""Overlays planted on the real-content set, each with frame-exact truth: burned-in subtitles and
titles in real TrueType fonts, mosaics that drift or track a region of the photograph, graphic,
image and pixelated logos, stickers, letterbox / pillarbox bars.

Footage overlays (bars, logos, mosaics, stickers) belong to a take and blend with it through
dissolves; text belongs to the edit and is drawn on the finished frame.
"""

from __future__ import annotations

import glob
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.corpus.lib.defects import CAPTIONS, SENTENCES, pixelate

FONT_GLOBS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf", "/usr/share/fonts/truetype/liberation/Liberation*.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSerif*.ttf")
__all__ = ["CAPTIONS", "SENTENCES", "fonts", "text_patch", "draw_patch", "graphic_logo", "image_logo",
           "sticker", "moving_mosaic", "bars"]


@lru_cache(maxsize=1)
def fonts() -> tuple[str, ...]:
    found = sorted({p for g in FONT_GLOBS for p in glob.glob(g) if "Mono" not in p})
    if not found:
        raise RuntimeError("no TrueType font under /usr/share/fonts/truetype: install fonts-dejavu-core "
                           "(apt-get install fonts-dejavu-core fonts-liberation)")
    return tuple(found)


@lru_cache(maxsize=256)
def text_patch(text: str, font_path: str, size: int, style: str) -> np.ndarray:
    """BGRA patch of ``text``: white with a black outline (subtitle), or on a dark plate (title)."""
    font = ImageFont.truetype(font_path, size)
    stroke = max(1, size // 12) if style == "subtitle" else 0
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    pad = max(2, size // 5)
    img = Image.new("RGBA", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), (0, 0, 0, 0 if style == "subtitle" else 170))
    draw = ImageDraw.Draw(img)
    fill = (255, 255, 255, 255) if style != "yellow" else (255, 230, 60, 255)
    draw.text((pad - x0, pad - y0), text, font=font, fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    rgba = np.asarray(img)
    return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])


def draw_patch(frame: np.ndarray, patch: np.ndarray, x: int, y: int, opacity: float = 1.0) -> None:
    """Alpha-composite a BGRA patch at (x, y), clipped to the frame, in place."""
    h, w = frame.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + pw), min(h, y + ph)
    if x1 <= x0 or y1 <= y0:
        return
    sub = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    alpha = sub[..., 3:4].astype(np.float32) / 255 * opacity
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + sub[..., :3] * alpha + 0.5).astype(np.uint8)


def graphic_logo(rng: np.random.Generator, size: int) -> np.ndarray:
    """A broadcaster's mark without letters: rings, a triangle, bars in two strong colours (BGRA)."""
    img = np.zeros((size, size, 4), np.uint8)
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,) for _ in range(2)]
    c = size // 2
    shape = int(rng.integers(0, 3))
    if shape == 0:
        cv2.circle(img, (c, c), c - 2, colours[0], -1, cv2.LINE_AA)
        cv2.circle(img, (c, c), c // 2, colours[1], -1, cv2.LINE_AA)
    elif shape == 1:
        pts = np.array([[c, 2], [size - 3, size - 3], [2, size - 3]], np.int32)
        cv2.fillPoly(img, [pts], colours[0], cv2.LINE_AA)
        cv2.circle(img, (c, size * 2 // 3), size // 6, colours[1], -1, cv2.LINE_AA)
    else:
        for k in range(4):
            x = 2 + k * (size - 4) // 4
            cv2.rectangle(img, (x, size - 3 - (k + 1) * (size - 6) // 4), (x + (size - 4) // 5, size - 3),
                          colours[k % 2], -1)
    return img


def image_logo(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A tiny picture (a crop of another photograph) in a white frame, as an image logo (BGRA)."""
    h, w = photo.shape[:2]
    side = min(h, w) // 3
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    thumb = cv2.resize(photo[y : y + side, x : x + side], (size - 4, size - 4), interpolation=cv2.INTER_AREA)
    img = np.full((size, size, 4), 255, np.uint8)
    img[2:-2, 2:-2, :3] = thumb
    return img


def pixelated_logo(logo: np.ndarray, cell: int) -> np.ndarray:
    out = logo.copy()
    out[..., :3] = pixelate(logo[..., :3], cell)
    out[..., 3] = np.where(pixelate(logo[..., 3:].repeat(3, -1), cell)[..., 0] > 127, 255, 0)
    return out


def sticker(rng: np.random.Generator, size: int) -> np.ndarray:
    """A bright star or heart with a dark outline (BGRA)."""
    img = np.zeros((size, size, 4), np.uint8)
    colour = tuple(int(c) for c in rng.integers(60, 256, 3)) + (255,)
    c, r = size / 2, size / 2 - 2
    if rng.random() < 0.5:
        ang = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1).astype(np.int32)
    else:
        t = np.linspace(0, 2 * np.pi, 60)
        pts = np.stack([c + r * np.sin(t) ** 3, c - r * (13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t)
                        - np.cos(4 * t)) / 17], 1).astype(np.int32)
    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    cv2.polylines(img, [pts], True, (20, 20, 20, 255), max(1, size // 20), cv2.LINE_AA)
    return img


def moving_mosaic(frame: np.ndarray, box: tuple[int, int, int, int], cell: int) -> None:
    """Pixelate ``box`` (x, y, w, h; clipped) of ``frame`` in place, its cell grid anchored at the box:
    a moving mosaic is re-pixelated every frame on a grid that moves with it."""
    h, w = frame.shape[:2]
    x, y, bw, bh = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
    if x1 - x0 >= cell and y1 - y0 >= cell:
        frame[y0:y1, x0:x1] = pixelate(frame[y0:y1, x0:x1], cell)


def bars(frame: np.ndarray, picture: tuple[int, int, int, int]) -> None:
    """Black outside the picture box (letterbox: top and bottom; pillarbox: left and right), in place."""
    x, y, bw, bh = picture
    frame[:y], frame[y + bh :], frame[:, :x], frame[:, x + bw :] = 0, 0, 0, 0


def font_for(rng: np.random.Generator) -> str:
    return str(rng.choice(fonts()))


def random_sentence(rng: np.random.Generator) -> str:
    return str(rng.choice(SENTENCES))


def random_caption(rng: np.random.Generator) -> str:
    return str(rng.choice(CAPTIONS))
