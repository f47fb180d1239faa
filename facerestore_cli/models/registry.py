"""The one registry of restoration methods, timm style: each model's card (``models/<name>/__init__.py``)
declares itself with :func:`register_method`, and everything else (the CLI's ``--method`` choices and
help, ``doctor``, the option checks, the weights lookup and ``weights fetch``) derives from it.

A card holds only plain data and a config dataclass, so listing the methods never imports torch; the
network module a card names is imported when a model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConversionError",
    "MethodSpec",
    "OfficialCheckpoint",
    "create_model",
    "get_method",
    "methods",
    "register_method",
]


class ConversionError(ValueError):
    """A checkpoint does not have the layout a converter expects (missing, unexpected or misshapen keys)."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    """Where a method's official checkpoint is published, and on what terms."""

    url: str
    homepage: str
    licence: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class MethodSpec:
    """What the tool knows about one restoration method."""

    name: str
    #: one line for ``--help`` and ``doctor``
    summary: str
    #: the config dataclass; ``config()`` is the official (or paper) size
    config: type
    #: whether it reads a person's references (a specific dictionary)
    uses_references: bool
    official: OfficialCheckpoint | None
    #: the module that implements ``build(config)`` and, where an official layout exists, ``convert_official``
    network: str
    #: the smallest config that runs (for tests over every registered method)
    tiny_config: Callable[[], Any]
    #: the ONNX graphs the method exports (plain names, so that finding the files needs no torch): a method
    #: that reads references has ``generic``, ``specific`` and ``encode``, any other ``restore``
    onnx_graphs: tuple[str, ...] = ()
    #: the module implementing ``onnx_graph(model, graph, dtype)`` (see ``models/onnx_export.py``)
    onnx_export: str | None = None

    @property
    def exporter(self) -> Any:
        """The module that describes this method's ONNX graphs (imports torch); ``None`` if it has none."""
        return importlib.import_module(self.onnx_export) if self.onnx_export else None

    @property
    def module(self) -> Any:
        return importlib.import_module(self.network)

    @property
    def has_converter(self) -> bool:
        return hasattr(self.module, "convert_official")

    def config_from_dict(self, values: Mapping[str, Any]) -> Any:
        """Build the config from a (JSON) dict, ignoring nothing silently."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown {self.name} config fields: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return self.config(**values)

    def build(self, config: Any | Mapping[str, Any] | None = None) -> Any:
        """The network (a ``torch.nn.Module``) for a config, a dict of one, or ``None`` for the default."""
        if config is None:
            config = self.config()
        elif isinstance(config, Mapping):
            config = self.config_from_dict(config)
        return self.module.build(config)


_METHODS: dict[str, MethodSpec] = {}
_discovered = False


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method (called by each model card at import); a name can be registered once."""
    existing = _METHODS.get(spec.name)
    if existing is not None and existing.network != spec.network:
        raise ValueError(f"method {spec.name!r} is already registered by {existing.network}")
    _METHODS[spec.name] = spec
    return spec


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import facerestore_cli.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:  # every sub-package of models/ is a model card
            importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def methods() -> dict[str, MethodSpec]:
    """Every registered method by name, in name order."""
    _discover()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> MethodSpec:
    """The method called ``name``; ``KeyError`` naming the known ones otherwise."""
    known = methods()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(known)}") from None


def create_model(name: str, config: Any | Mapping[str, Any] | None = None) -> Any:
    """Build a model by method name from its config (a dataclass, a dict, or ``None`` for the default)."""
    return get_method(name).build(config)
