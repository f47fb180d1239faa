"""facerestore: restore the faces in whole albums of photos, changing nothing else.

The public API (everything else is an implementation detail that may move)::

    from facerestore_cli import restore_file, FaceRestorer, AlbumRunner, RestoreOptions

    report = restore_file("photo.jpg", "restored.jpg", RestoreOptions(method="dmdnet"))

    engine = FaceRestorer(RestoreOptions(method="memgan"))      # models load once
    result = engine.restore(load_photo("photo.jpg"))            # a photo in memory

Names are imported on first use, so ``import facerestore_cli`` stays fast for scripts that call the
command once per photo.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "restore_file": "facerestore_cli.runner",
    "AlbumRunner": "facerestore_cli.runner",
    "RayAlbumRunner": "facerestore_cli.cluster",
    "ClusterSummary": "facerestore_cli.cluster",
    "ClusterError": "facerestore_cli.cluster",
    "ClusterOptions": "facerestore_cli.options",
    "FaceRestorer": "facerestore_cli.engine",
    "PhotoResult": "facerestore_cli.engine",
    "RestoreOptions": "facerestore_cli.options",
    "RuntimeOptions": "facerestore_cli.options",
    "InputOptions": "facerestore_cli.options",
    "DetectOptions": "facerestore_cli.options",
    "ReferenceOptions": "facerestore_cli.options",
    "PasteOptions": "facerestore_cli.options",
    "OutputOptions": "facerestore_cli.options",
    "create_restorer": "facerestore_cli.restore",
    "METHODS": "facerestore_cli.restore",
    "Photo": "facerestore_cli.imagefile",
    "load_photo": "facerestore_cli.imagefile",
    "save_photo": "facerestore_cli.imagefile",
    "ImageFileError": "facerestore_cli.imagefile",
    "ImageReport": "facerestore_cli.report",
    "FaceReport": "facerestore_cli.report",
    "Summary": "facerestore_cli.report",
}

__all__ = [
    "METHODS",
    "AlbumRunner",
    "ClusterError",
    "ClusterOptions",
    "ClusterSummary",
    "DetectOptions",
    "FaceReport",
    "FaceRestorer",
    "ImageFileError",
    "ImageReport",
    "InputOptions",
    "OutputOptions",
    "PasteOptions",
    "Photo",
    "PhotoResult",
    "RayAlbumRunner",
    "ReferenceOptions",
    "RestoreOptions",
    "RuntimeOptions",
    "Summary",
    "__version__",
    "create_restorer",
    "load_photo",
    "restore_file",
    "save_photo",
]

if TYPE_CHECKING:
    from facerestore_cli.cluster import ClusterError, ClusterSummary, RayAlbumRunner
    from facerestore_cli.engine import FaceRestorer, PhotoResult
    from facerestore_cli.imagefile import ImageFileError, Photo, load_photo, save_photo
    from facerestore_cli.options import (
        ClusterOptions,
        DetectOptions,
        InputOptions,
        OutputOptions,
        PasteOptions,
        ReferenceOptions,
        RestoreOptions,
        RuntimeOptions,
    )
    from facerestore_cli.report import FaceReport, ImageReport, Summary
    from facerestore_cli.restore import METHODS, create_restorer
    from facerestore_cli.runner import AlbumRunner, restore_file


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'facerestore_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
