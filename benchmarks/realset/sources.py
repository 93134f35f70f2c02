"""Real photographs from Debian's wallpaper and background packages, fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into a cache folder (never committed), then downscaled once.

``mate-backgrounds`` is reserved for an independent check and refused here by name. The package
versions used are recorded in the cache's ``sources.json``: a Debian update can change the photos,
so a set is deterministic per (seed, package versions).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess

import cv2

PACKAGES = ("gnome-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers", "lomiri-wallpapers",
            "sway-backgrounds")
RESERVED = frozenset({"mate-backgrounds"})  # the independent check's material: never fetched here
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MIN_BYTES = 150_000  # smaller files are icons, previews or flat vector art, not photographs
MAX_SIDE = 1920  # photos are cached at most this wide: the camera never needs more for 640x360
SKIP = ("screenshot", "vnc-", "symbolic-", "-d.", "portrait", "_768x1024", "_1136x640", "_1366x768", "_2048x1536")


def _run(cmd: list[str], cwd: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}\n"
                           "The real-content set needs Debian's apt (apt-get update once) and network to the "
                           "Debian archive, or a filled cache folder.")


def fetch_packages(cache: str, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``apt-get download`` + ``dpkg -x`` each package into ``cache``; returns {package: deb file}."""
    bad = RESERVED.intersection(packages)
    if bad:
        raise ValueError(f"{sorted(bad)} is reserved for the independent check; leave it out of --packages")
    debs, root = os.path.join(cache, "debs"), os.path.join(cache, "root")
    os.makedirs(debs, exist_ok=True)
    found = {}
    for name in packages:
        have = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
        if not have:
            _run(["apt-get", "download", name], debs)
            have = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
        if not have:
            raise RuntimeError(f"apt-get download {name} left no .deb in {debs}")
        marker = os.path.join(root, f".{os.path.basename(have[-1])}.unpacked")
        if not os.path.exists(marker):
            os.makedirs(root, exist_ok=True)
            _run(["dpkg", "-x", have[-1], root], debs)
            open(marker, "w").close()
        found[name] = os.path.basename(have[-1])
    return found


def photo_files(root: str) -> list[str]:
    """Photographs under an unpacked tree: one size per Plasma wallpaper (its largest), light variants
    of GNOME's light/dark pairs, no previews. Sorted, so a seed picks the same photos everywhere."""
    files = []
    for path in glob.glob(os.path.join(root, "usr", "share", "**", "*"), recursive=True):
        low = path.lower()
        if low.endswith(EXTENSIONS) and os.path.getsize(path) >= MIN_BYTES and not any(s in low for s in SKIP):
            files.append(path)
    best: dict[str, str] = {}  # Plasma ships one picture in several sizes: keep the largest
    for path in files:
        key = path.split("/contents/images")[0] if "/contents/images" in path else path
        if key not in best or os.path.getsize(path) > os.path.getsize(best[key]):
            best[key] = path
    return sorted(best.values())


def cached_photos(cache: str, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Fetch (once) and return the downscaled photos (lossless PNG) in ``cache/photos``."""
    versions = fetch_packages(cache, packages)
    out_dir = os.path.join(cache, "photos")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    root = os.path.join(cache, "root")
    for k, src in enumerate(photo_files(root)):
        name = os.path.basename(src.split("/contents/images")[0]) if "/contents/images" in src else src
        dst = os.path.join(out_dir, f"{k:03d}_{os.path.splitext(os.path.basename(name))[0]}.png")
        if not os.path.exists(dst):
            image = cv2.imread(src, cv2.IMREAD_COLOR)
            if image is None or min(image.shape[:2]) < 600:
                continue
            scale = min(1.0, MAX_SIDE / image.shape[1])
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.imwrite(dst + ".tmp.png", image)
            os.replace(dst + ".tmp.png", dst)
        paths.append(dst)
    with open(os.path.join(cache, "sources.json"), "w", encoding="utf-8") as fh:
        json.dump({"packages": versions, "photos": [os.path.basename(p) for p in paths]}, fh, indent=1)
    if len(paths) < 8:
        raise RuntimeError(f"only {len(paths)} photographs found in {packages}: the set needs at least 8")
    return paths
