"""Procedural shot content: a tileable textured backdrop, moving subjects and a 6DoF camera.

Every shot draws its own palette (hue, brightness key, saturation) and its own texture structure,
so a cut is a real change in colour *and* layout, as between two real shots. The backdrop is
periodic (cosine gradients, FFT band-limited noise, shapes drawn with wrap-around copies), so a
camera may travel any distance (cv2.BORDER_WRAP) without a seam ever crossing the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from tasks.corpus.lib.camera import CameraPath, camera_truth, plan_camera
from tasks.corpus.lib.sprites import HEIGHT_RANGE, MOVES, NAMES, Sprite, draw_subject, sample_category
from tasks.corpus.lib.truth import CameraMotion, Category, Subject

KEYS = {"dark": (0.2, 0.42), "mid": (0.45, 0.75), "bright": (0.75, 1.0)}  # HSV value range of the palette
KEY_WEIGHTS = (0.2, 0.55, 0.25)
STRUCTURES = ("blobs", "stripes", "grid", "shards", "rings")
NOISE_BANDS = {"cloudy": (1, 6), "mixed": (3, 20), "grainy": (15, 60)}  # cycles per canvas side
SUBJECT_PARALLAX = 1.4  # subjects stand nearer than the backdrop: they shift more under translation
MIN_HUE_STEP = 50  # degrees between consecutive shots' base hues: neighbouring shots never look alike


@dataclass(frozen=True, eq=False)
class Placement:
    sprite: Sprite
    anchor0: np.ndarray  # bottom-centre in subject-layer canvas coordinates at t = 0
    velocity: np.ndarray  # layer pixels per frame


@dataclass(frozen=True, eq=False)
class ShotScene:
    canvas: np.ndarray
    camera: CameraPath
    placements: tuple[Placement, ...]  # back to front
    hue: float
    camera_truth: CameraMotion
    subjects: tuple[Subject, ...]  # main first
    crop: float = 1.0  # > 1 crops in about the centre (near-duplicate re-renders)
    gain: float = 1.0  # brightness gain (near-duplicate re-renders)
    t_offset: int = 0  # content frame t renders the camera/subject time t + t_offset

    @property
    def category(self) -> Category:
        return self.subjects[0].category


def _palette(rng: np.random.Generator, hue: float, key: str) -> np.ndarray:
    """Four BGR colours: an analogous, complementary or triadic scheme around ``hue`` in one key."""
    offsets = {"analogous": (0, 25, -25, 50), "complementary": (0, 180, 20, 200), "triadic": (0, 120, 240, 30)}
    scheme = rng.choice(list(offsets))
    hsv = np.array([[[((hue + o) % 360) / 2, rng.uniform(60, 230), rng.uniform(*KEYS[key]) * 255]
                     for o in offsets[scheme]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(np.float32)


def _band_noise(rng: np.random.Generator, h: int, w: int, band: tuple[int, int]) -> np.ndarray:
    """Periodic noise in [0, 1] whose energy lies between ``band`` cycles per canvas side."""
    fy, fx = np.fft.fftfreq(h)[:, None] * h, np.fft.rfftfreq(w)[None, :] * w
    radius = np.hypot(fx * (h / w), fy)
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) * (
        (radius >= band[0]) & (radius <= band[1]))
    field = np.fft.irfft2(spectrum, s=(h, w))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def _structure(rng: np.random.Generator, canvas: np.ndarray, palette: np.ndarray, style: str) -> None:
    """Shapes in one of a few layouts; each is also drawn at its eight periodic copies so the
    canvas stays tileable."""
    h, w = canvas.shape[:2]
    for _ in range(int(rng.integers(6, 30))):
        color = tuple(float(c) for c in np.clip(palette[rng.integers(4)] * rng.uniform(0.7, 1.3), 0, 255))
        x, y, size = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.2) * h
        angle, squash, shard = rng.uniform(0, 180), rng.uniform(0.4, 1), rng.uniform(-1.5, 1.5, (3, 2)) * size
        for cy in (y - h, y, y + h):
            for cx in (x - w, x, x + w):
                if style == "blobs":
                    cv2.ellipse(canvas, (int(cx), int(cy)), (int(size), int(size * squash)), angle, 0, 360, color, -1,
                                cv2.LINE_AA)
                elif style == "stripes":  # poles, planks: strong structure along one axis
                    cv2.rectangle(canvas, (int(cx), 0), (int(cx + size * 0.4), h), color, -1)
                elif style == "grid":  # windows, tiles
                    cv2.rectangle(canvas, (int(cx), int(cy)), (int(cx + size), int(cy + size * 0.7)), color, -1)
                elif style == "shards":
                    cv2.fillPoly(canvas, [np.int32(shard + [cx, cy])], color, cv2.LINE_AA)
                else:  # rings
                    cv2.circle(canvas, (int(cx), int(cy)), int(size), color, max(1, int(size / 5)), cv2.LINE_AA)


def make_canvas(rng: np.random.Generator, size: tuple[int, int], hue: float) -> np.ndarray:
    """Tileable BGR backdrop of ``size`` = (width, height): gradient + band noise + shapes."""
    w, h = size
    key = rng.choice(list(KEYS), p=KEY_WEIGHTS)
    palette = _palette(rng, hue, key)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = rng.integers(0, 3, 2) if rng.random() < 0.5 else (int(rng.integers(1, 3)), 0)
    gradient = 0.5 + 0.5 * np.cos(2 * np.pi * (nx * xs / w + ny * ys / h) + rng.uniform(0, 2 * np.pi))
    noise = _band_noise(rng, h, w, NOISE_BANDS[rng.choice(list(NOISE_BANDS))])
    mix = rng.uniform(0.2, 0.8)
    level = np.clip((mix * gradient + (1 - mix) * noise) * 255, 0, 255).astype(np.uint8)
    lut = np.stack([np.interp(np.arange(256), np.linspace(0, 255, 4), palette[:, c]) for c in range(3)], axis=1)
    canvas = np.ascontiguousarray(lut[level].astype(np.float32))
    _structure(rng, canvas, palette, rng.choice(STRUCTURES))
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _next_hue(rng: np.random.Generator, prev_hue: float | None) -> float:
    while True:
        hue = float(rng.uniform(0, 360))
        if prev_hue is None or abs((hue - prev_hue + 180) % 360 - 180) >= MIN_HUE_STEP:
            return hue


def _place(rng, cam: CameraPath, sprite: Sprite, category: Category, main: bool) -> Placement:
    """Choose where the subject stands on screen at the first and last frame, then move it at
    constant velocity in the subject layer between those two points (tracking shots included)."""
    w, h = cam.width, cam.height
    start = np.array([rng.uniform(0.3, 0.7) if main else rng.uniform(0.1, 0.9), rng.uniform(0.8, 0.98)]) * [w, h]
    travel = MOVES.get(category, 0.0) * w * rng.uniform(-1, 1)
    end = start + [travel, rng.uniform(-0.03, 0.03) * h * bool(travel)]
    to_layer = [cam.homography(t, SUBJECT_PARALLAX) for t in (0, cam.span - 1)]
    a0, a1 = (_apply(m, p) for m, p in zip(to_layer, (start, end), strict=True))
    if category not in MOVES:  # buildings, scenery and objects stay put in the world
        a1 = a0
    return Placement(sprite, a0, (a1 - a0) / max(1, cam.span - 1))


def _apply(m: np.ndarray, point) -> np.ndarray:
    x, y, z = m @ [point[0], point[1], 1.0]
    return np.array([x / z, y / z])


def build_shot(
    rng: np.random.Generator, width: int, height: int, fps: float, span: int, prev_hue: float | None,
    fast_pan: bool = False,
) -> ShotScene:
    """One shot: backdrop, camera path over ``span`` content frames, main subject plus 0-2 extras."""
    hue = _next_hue(rng, prev_hue)
    canvas = make_canvas(rng, (2 * width, 2 * height), hue)
    cam = plan_camera(rng, width, height, (2 * width, 2 * height), fps, span, fast_pan)
    cats = [sample_category(rng) for _ in range(1 + rng.choice(3, p=(0.45, 0.35, 0.2)))]
    subjects, placements = [], []
    for k, cat in enumerate(cats):
        name = str(rng.choice(NAMES[cat]))
        size = rng.uniform(*HEIGHT_RANGE[cat]) * height * (1 if k == 0 else rng.uniform(0.5, 0.8))
        subjects.append(Subject(category=cat, name=name, is_main=k == 0))
        placements.append(_place(rng, cam, draw_subject(rng, cat, name, round(size)), cat, k == 0))
    # Backdrop-like subjects (scenery, buildings) go behind; the rest from far (high) to near (low).
    order = sorted(range(len(cats)), key=lambda k: (cats[k] not in ("scenery", "architecture"),
                                                    placements[k].anchor0[1]))
    return ShotScene(canvas, cam, tuple(placements[k] for k in order), hue, camera_truth(cam), tuple(subjects))


def near_duplicate(rng: np.random.Generator, scene: ShotScene, t_offset: int) -> ShotScene:
    """The same footage again with a slight crop and brightness change (a re-edit of a take)."""
    return replace(scene, crop=float(rng.uniform(1.04, 1.1)), gain=float(rng.choice([-1, 1]) * rng.uniform(0.06, 0.12) + 1),
                   t_offset=t_offset)


def _paste(frame: np.ndarray, sprite: Sprite, to_frame: np.ndarray) -> None:
    """Warp the sprite (its pixels -> frame pixels by ``to_frame``) and alpha-blend it in place."""
    sh, sw = sprite.alpha.shape
    corners = np.array([[0, 0, 1], [sw, 0, 1], [sw, sh, 1], [0, sh, 1]], float).T
    proj = to_frame @ corners
    if np.any(proj[2] <= 0):
        return
    xy = proj[:2] / proj[2]
    x0, y0 = np.maximum(np.floor(xy.min(axis=1)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(xy.max(axis=1)).astype(int) + 1, frame.shape[1::-1])
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ to_frame
    size = (int(x1 - x0), int(y1 - y0))
    color = cv2.warpPerspective(sprite.bgr, shift, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(sprite.alpha, shift, size, flags=cv2.INTER_LINEAR)[..., None]
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + color * alpha + 0.5).astype(np.uint8)


def render(scene: ShotScene, t: int) -> np.ndarray:
    """The shot's content frame ``t`` (BGR uint8); a pure function of (scene, t)."""
    cam, time = scene.camera, t + scene.t_offset
    w, h = cam.width, cam.height
    crop = np.array([[1 / scene.crop, 0, w / 2 * (1 - 1 / scene.crop)], [0, 1 / scene.crop, h / 2 * (1 - 1 / scene.crop)],
                     [0, 0, 1]])
    frame = cv2.warpPerspective(scene.canvas, cam.homography(time) @ crop, (w, h),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP)
    to_frame = np.linalg.inv(cam.homography(time, SUBJECT_PARALLAX) @ crop)
    for p in scene.placements:
        sh, sw = p.sprite.alpha.shape
        anchor = p.anchor0 + p.velocity * time
        to_layer = np.array([[1.0, 0, anchor[0] - sw / 2], [0, 1, anchor[1] - sh], [0, 0, 1]])
        _paste(frame, p.sprite, to_frame @ to_layer)
    if scene.gain != 1.0:
        frame = cv2.convertScaleAbs(frame, alpha=scene.gain)
    return frame
