"""DMDNet (Li et al., TPAMI 2022): dual memory dictionaries, generic and per-person specific.

This file is the model's card: its name, config, official checkpoint and what it reads, registered
with :mod:`facerestore_cli.models.registry`. The network is in :mod:`.network`, imported on first use
(its names are reachable from here too).
"""

from __future__ import annotations

from dataclasses import dataclass

from facerestore_cli._lazy import lazy_exports
from facerestore_cli.models.registry import MethodSpec, OfficialCheckpoint, register_method


@dataclass(frozen=True)
class Config:
    """Network size. ``Config()`` is the official checkpoint's size; smaller ones are ours."""

    ngf: int = 64
    banks: int = 128

    @classmethod
    def official(cls) -> Config:
        return cls()

    @classmethod
    def compact(cls) -> Config:
        """Our CPU-trained size: ~2.6 M parameters and a 32-item generic dictionary."""
        return cls(ngf=16, banks=32)

    def channels(self, size: int) -> int:
        return {256: self.ngf, 128: self.ngf * 2, 64: self.ngf * 4}[size]


SPEC = register_method(
    MethodSpec(
        name="dmdnet",
        summary="DMDNet: generic and per-person dictionaries (--refs, --people)",
        config=Config,
        uses_references=True,
        official=OfficialCheckpoint(
            url="https://github.com/csxmli2016/DMDNet/releases/download/v1/DMDNet.pth",
            homepage="https://github.com/csxmli2016/DMDNet",
            licence="CC BY-NC-SA 4.0 (non-commercial)",
            # Not known offline: the structure is verified by importing (every key and shape is checked).
            sha256=None,
            size=None,
        ),
        network=__name__ + ".network",
        tiny_config=lambda: Config(ngf=8, banks=4),
        onnx_graphs=("generic", "specific", "encode"),
        onnx_export=__name__ + ".export",
    )
)

_NETWORK = __name__ + ".network"
_BOXES = __name__ + ".boxes"  # torch-free: the onnxruntime restorer computes boxes without torch
_EXPORTS = {
    name: _NETWORK
    for name in (
        "BOX_ORDER", "DMDNet", "PARTS", "PART_SIZES", "SCALES", "SpecificDictionary", "adain", "build",
        "component_boxes", "convert_official", "dict_key", "fold_spectral_norm", "fused_convolutions_available",
        "infer_config", "mem_buffer_name", "part_size", "read_memory",
    )
}  # fmt: skip
_EXPORTS.update({name: _BOXES for name in ("BOX_ORDER", "PARTS", "PART_SIZES", "SCALES", "box_problem",
                                           "component_boxes", "part_size")})  # fmt: skip
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
