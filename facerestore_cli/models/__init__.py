"""The restoration networks: one folder per model (its card in ``__init__``, its network in
``network.py``), behind the registry of :mod:`facerestore_cli.models.registry`.

``models`` imports nothing from ``weights``, ``train`` or the face stages: a model is numbers in,
numbers out, and its converters raise ``ValueError`` (:class:`ConversionError`).
"""

from __future__ import annotations

from facerestore_cli.models.registry import (
    ConversionError,
    MethodSpec,
    OfficialCheckpoint,
    create_model,
    get_method,
    methods,
    register_method,
)

__all__ = [
    "ConversionError",
    "MethodSpec",
    "OfficialCheckpoint",
    "create_model",
    "get_method",
    "methods",
    "register_method",
]
