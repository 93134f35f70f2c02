"""Still images as samples: the report trains 256p and 360p on images and videos jointly
(SkyReels-V2 section 3.3), so an input folder's photos are ingested beside its videos.

Pixels are always upright as displayed (EXIF orientation applied), like rotated videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from infra.video import VideoError


@dataclass(frozen=True)
class ImageProbe:
    container: str  # PIL format, e.g. "JPEG"
    codec: str
    width: int  # as displayed (after EXIF orientation)
    height: int
    rotation: int  # degrees counter-clockwise applied to display it


_ROTATION = {3: 180, 6: 270, 8: 90, 5: 270, 7: 90}  # EXIF orientation -> counter-clockwise turn


def probe_image(uri: str, path: str, max_size: tuple[int, int] | None = None) -> ImageProbe:
    """Facts of a local image file; :class:`VideoError` (a row error) when it is unusable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
            if max_size and (width > max_size[0] or height > max_size[1]):
                raise VideoError(uri, f"absurd image size {width}x{height} (limit {max_size[0]}x{max_size[1]}); "
                                 "downscale it or raise stages.ingest.max_width/max_height")
            fmt = img.format or "unknown"
            img.load()  # decodes every pixel: a truncated file fails here, not in a later stage
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, UnidentifiedImageError) and exc.errno is not None:
            raise  # the disk, not the image (classified by the caller)
        raise VideoError(uri, f"corrupt or truncated image: {exc}; re-download or re-encode it") from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageProbe(container=fmt, codec=fmt.lower(), width=width, height=height,
                      rotation=_ROTATION.get(orientation, 0))


def load_image(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB pixels, upright as displayed."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
