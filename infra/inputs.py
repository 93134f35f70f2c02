"""The input listing, every entry accounted for: a video or an image to ingest, or a skip with
its reason (hidden file, dangling link, metadata sidecar, unsupported type, a folder named like a video).

Nothing under the input may vanish silently: a skip is counted per reason, logged, and
published with the ingest stage (``skipped.json``) beside the rows of what was ingested.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from infra import storage

log = logging.getLogger("reelflow.ingest")

HIDDEN = "hidden file (partial writes and tool state: .part, .DS_Store, rsync temporaries)"
HIDDEN_DIR = "hidden folder (not descended)"
DANGLING = "dangling link (its target does not exist); fix or remove the link"
UNSUPPORTED = "unsupported type (not a video or image extension of stages.ingest); rename it or extend the list"
FOLDER = "a folder named like a media file; videos must be files"
UNREADABLE = "not a regular file (device, socket or pipe)"
SIDECAR = "metadata beside the media (json, parquet, text, subtitles, checksums): not ingested"
# Files that travel with footage on purpose (annotations, manifests, subtitles, checksums, the synthetic
# corpus's truth): counted and published like every skip, but logged at INFO, since warning about them
# on every run teaches people to ignore the warnings that matter.
SIDECAR_EXTENSIONS = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".md", ".yaml", ".yml", ".xml",
                      ".srt", ".vtt", ".ass", ".nfo", ".md5", ".sha1", ".sha256")
QUIET_REASONS = (SIDECAR,)


@dataclass
class Listing:
    videos: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"uri", "reason"}

    @property
    def entries(self) -> int:
        return len(self.videos) + len(self.images) + len(self.skipped)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s["reason"] for s in self.skipped))

    def skip(self, uri: str, reason: str) -> None:
        self.skipped.append({"uri": uri, "reason": reason})


def _kind(name: str, videos: tuple[str, ...], images: tuple[str, ...]) -> str | None:
    lower = name.lower()
    if lower.endswith(videos):
        return "video"
    if lower.endswith(images):
        return "image"
    return None


def _local_entries(root: str) -> list[tuple[str, str]]:
    """(path, 'file' | 'dir' | 'dangling' | 'hidden-dir' | 'special') for every entry below ``root``.

    Links are followed to files (a linked video is ingested) but never into folders (no cycles)."""
    out: list[tuple[str, str]] = []
    for base, dirs, files in os.walk(root, followlinks=False):
        keep = []
        for name in sorted(dirs):
            path = os.path.join(base, name)
            if name.startswith("."):
                out.append((path, "hidden-dir"))
            else:
                out.append((path, "dir"))
                keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            path = os.path.join(base, name)
            if not os.path.exists(path):
                out.append((path, "dangling"))
            elif not os.path.isfile(path):
                out.append((path, "special"))
            else:
                out.append((path, "file"))
    return out


def list_inputs(input_uri: str, videos: tuple[str, ...], images: tuple[str, ...]) -> Listing:
    """Sort every entry under ``input_uri`` (a folder, an ``s3://`` prefix or one file)."""
    root = storage.normalize(input_uri)
    videos = tuple(e.lower() for e in videos)
    images = tuple(e.lower() for e in images)
    listing = Listing()
    if storage.is_remote(root):
        entries = [(uri, "file") for uri in storage.list_files(root)]
    elif os.path.isdir(root):
        entries = _local_entries(root)
    elif os.path.lexists(root) and not os.path.exists(root):
        entries = [(root, "dangling")]
    elif os.path.exists(root):
        entries = [(root, "file")]
    else:
        raise FileNotFoundError(f"input {input_uri!r} does not exist; pass a folder or s3:// prefix of videos")
    for uri, what in sorted(entries):
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        kind = _kind(name, videos, images)
        if what == "dir":
            if kind is not None:  # other folders are not entries: their files are
                listing.skip(uri, FOLDER)
        elif what == "hidden-dir":
            listing.skip(uri, HIDDEN_DIR)
        elif name.startswith("."):
            listing.skip(uri, HIDDEN)
        elif what == "dangling":
            listing.skip(uri, DANGLING)
        elif what == "special":
            listing.skip(uri, UNREADABLE)
        elif kind is None:
            listing.skip(uri, SIDECAR if name.lower().endswith(SIDECAR_EXTENSIONS) else UNSUPPORTED)
        else:
            (listing.videos if kind == "video" else listing.images).append(uri)
    return listing


def log_skips(listing: Listing) -> None:
    """One line per reason (count + first names: a warning, INFO for metadata sidecars); every entry at
    debug level (and in skipped.json)."""
    for reason, count in sorted(listing.reasons().items()):
        names = [os.path.basename(s["uri"]) for s in listing.skipped if s["reason"] == reason]
        more = f" and {count - 3} more" if count > 3 else ""
        level = logging.INFO if reason in QUIET_REASONS else logging.WARNING
        log.log(level, "ingest: skipped %d entr%s, %s: %s%s", count, "y" if count == 1 else "ies", reason,
                    ", ".join(names[:3]), more)
    for s in listing.skipped:
        log.debug("ingest: skipped %s: %s", s["uri"], s["reason"])
