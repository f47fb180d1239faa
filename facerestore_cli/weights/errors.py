"""The exceptions of the weights package, apart so that every layer can raise them without importing the rest.

Their messages are written for the user and printed as they are by the CLI (``WeightsError`` is what
``facerestore`` catches to turn a weights problem into an error message instead of a traceback).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DownloadError", "WeightsError", "WeightsIntegrityError", "WeightsNotFound"]


class WeightsError(Exception):
    """Base class of every weights problem; the message is meant for the user as is."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """No weights file for a method in any place searched (the message lists them)."""


class WeightsIntegrityError(WeightsError):
    """A weights file does not match its manifest or download checksum, or is not valid safetensors."""


class CheckpointError(WeightsError, ValueError):
    """A checkpoint cannot be imported: damaged, not a checkpoint, unsafe pickle, or wrong keys/shapes.

    Model converters raise ``ValueError`` (``models.ConversionError``); importing wraps them in this
    class, so the CLI reports both alike.
    """


class DownloadError(WeightsError):
    """A download failed for good (HTTP error, too many retries, server serving the wrong size)."""
