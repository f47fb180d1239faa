"""Every default of the tool, in one place: the CLI's flags, the library's options and the stages read
them from here, so a default can never differ between a script and the command line.

This module imports nothing heavy: the CLI reads it to build its help before any model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from facerestore_cli.imagefile import DEFAULT_MAX_PIXELS

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DETECTOR",
    "DEFAULT_DETECT_MAX_SIDE",
    "DEFAULT_EMBEDDER",
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_METHOD",
    "DEFAULT_MIN_FACE",
    "cache_root",
    "default_cache_root",
]

DEFAULT_METHOD = "dmdnet"
DEFAULT_DETECTOR = "retinaface"
#: Detect on a copy whose long side is at most this: RetinaFace finds faces of 16 px and more in it,
#: and a 40 MP scan costs what a 2.5 MP photo does.
DEFAULT_DETECT_MAX_SIDE = 1600
DEFAULT_MIN_FACE = 16
DEFAULT_BATCH_SIZE = 4
DEFAULT_EMBEDDER = "auto"
DEFAULT_JPEG_QUALITY = 95


def cache_root() -> Path:
    """``$FACERESTORE_CACHE``, else :func:`default_cache_root`."""
    env = os.environ.get("FACERESTORE_CACHE")
    return Path(env).expanduser() if env else default_cache_root()


def default_cache_root() -> Path:
    """The cache a run uses without ``$FACERESTORE_CACHE``: ``$XDG_CACHE_HOME/facerestore``, else
    ``~/.cache/facerestore``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "facerestore"
