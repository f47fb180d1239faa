"""The restoration networks, one per module, behind a small registry.

Each model module exposes a plain ``Config`` dataclass, ``build(config) -> nn.Module`` and, where an
official or foreign checkpoint layout exists, a converter. The registry imports a model module only
when that model is asked for, so ``facerestore --method none`` never pays for torch model code.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

#: method name -> module that implements it
MODELS: dict[str, str] = {
    "dmdnet": "facerestore_cli.models.dmdnet",
    "memgan": "facerestore_cli.models.memgan",
}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model."""

    name: str
    module: Any

    @property
    def config_cls(self) -> type:
        return self.module.Config

    def config_from_dict(self, values: dict[str, Any]) -> Any:
        """Build the model's config from a (JSON) dict, ignoring nothing silently."""
        fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown {self.name} config fields: {sorted(unknown)}")
        return self.config_cls(**values)


def model_info(name: str) -> ModelInfo:
    """Look a model up by method name; raise ``KeyError`` listing the known ones."""
    try:
        module_name = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return ModelInfo(name=name, module=importlib.import_module(module_name))


def create_model(name: str, config: Any | dict[str, Any] | None = None) -> nn.Module:
    """Build a model by name from its config (a dataclass, a dict, or ``None`` for the default)."""
    info = model_info(name)
    if config is None:
        config = info.config_cls()
    elif isinstance(config, dict):
        config = info.config_from_dict(config)
    return info.module.build(config)
