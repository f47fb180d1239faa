"""Importing official ``.pth`` checkpoints: loaded safely, unwrapped, converted by the model and stored as safetensors.

Checkpoints come from outside the project, so they are only ever read with ``torch.load(weights_only=True)``:
a file that needs arbitrary pickled objects is refused with a message, never executed. The conversion to
our layout is each model module's ``convert_official``; this module only deals with the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerestore_cli.weights.errors import CheckpointError, WeightsError
from facerestore_cli.weights.files import _SUFFIX, WEIGHTS_FORMAT_VERSION, file_sha256, save_weights
from facerestore_cli.weights.lookup import load_weights, user_weights_dir
from facerestore_cli.weights.manifest import MANIFEST_NAME, _entry_for_file, update_manifest

__all__ = [
    "CHECKPOINT_WRAPPER_KEYS",
    "ImportResult",
    "import_checkpoint",
    "initialise_from_stylegan2",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

#: keys under which wrapped checkpoints keep their state dict, in order of preference (EMA weights first)
CHECKPOINT_WRAPPER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model")


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_checkpoint` (and :func:`~facerestore_cli.weights.download.fetch`) wrote."""

    path: Path
    method: str
    config: Any
    sha256: str
    size: int
    source: Path
    source_sha256: str
    manifest_path: Path
    tensor_count: int


def _load_checkpoint(src: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, turning every failure into a :class:`CheckpointError`."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notices; errors still raise
            return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{src} contains pickled Python objects other than tensors (it needs {found.group(1)}). "
                "facerestore only loads checkpoints with torch.load(weights_only=True), because loading "
                "anything else can run arbitrary code; it refused this file. Re-save just the state dict "
                "(torch.save(model.state_dict(), ...)) from a trusted environment."
            ) from exc
        detail = _weights_only_detail(text)
        if _looks_like_pickle(src):
            raise CheckpointError(
                f"{src} is a pickle that torch.load(weights_only=True) cannot read safely ({detail}); it was "
                "refused. Re-save just the state dict with torch.save(model.state_dict(), ...), or the file "
                "is damaged: download it again."
            ) from exc
        raise CheckpointError(
            f"{src} is damaged, truncated or not a PyTorch checkpoint ({detail}); download it again"
        ) from exc
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{src} is damaged, truncated or not a PyTorch checkpoint ({detail}); download it again"
        ) from exc


def _weights_only_detail(text: str) -> str:
    """The useful line of torch's long weights_only error (which also suggests unsafe loading)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip().splitlines()[0][:200] if found else "unreadable pickle"


def _looks_like_pickle(path: Path) -> bool:
    """A raw pickle (protocol 2+) starts with PROTO; a torch zip checkpoint with PK."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(2)
        return head[:1] == b"\x80" or head == b"PK"
    return False


def _unwrap_state_dict(obj: Any, src: Path) -> tuple[dict[str, Any], list[str]]:
    """Find the state dict in a raw or wrapped checkpoint; return it and the wrapper keys walked."""
    import torch

    walked: list[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping):
            where = f" under {'/'.join(walked)}" if walked else ""
            raise CheckpointError(f"{src}: expected a dict of tensors{where}, found a {type(obj).__name__}")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), walked
        key = next((k for k in CHECKPOINT_WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            if not obj:
                raise CheckpointError(f"{src}: the checkpoint holds no tensors")
            junk = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise CheckpointError(
                f"{src} is not a state dict: {len(junk)} of {len(obj)} entries are not tensors "
                f"({', '.join(junk[:5])}{', ...' if len(junk) > 5 else ''}); a wrapped checkpoint must keep "
                f"its weights under one of {', '.join(repr(k) for k in CHECKPOINT_WRAPPER_KEYS)}"
            )
        walked.append(key)
        obj = obj[key]
    raise CheckpointError(f"{src}: state dict nested too deep ({'/'.join(walked)})")


def _strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints saved from ``nn.DataParallel`` prefix every key with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_checkpoint(src: Path | str) -> dict[str, Any]:
    """The state dict of a foreign ``.pth`` checkpoint, loaded safely (``weights_only=True``).

    Unwraps the usual wrapper keys and a ``module.`` prefix; raises :class:`CheckpointError` with a
    message naming the file and what is wrong with it.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such checkpoint file")
    state, _ = _unwrap_state_dict(_load_checkpoint(src), src)
    return _strip_module_prefix(state)


def import_checkpoint(
    src: Path | str,
    method: str,
    dest_dir: Path | str | None = None,
    *,
    name: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> ImportResult:
    """Check an official checkpoint key by key, fold it into our layout and store it as safetensors.

    Accepts a ``.pth``/``.pt``/``.ckpt`` loadable with ``torch.load(weights_only=True)`` holding a raw
    state dict or one wrapped under ``params_ema``, ``params``, ``state_dict`` or ``model`` (searched in
    that order, nested up to a few levels; a ``module.`` prefix is dropped), or a ``.safetensors`` file.
    Writes ``<method>-official.safetensors`` (fp32, or ``name``) into ``dest_dir`` (default: the user
    weights folder) and records it in that folder's manifest. ``extra_metadata`` adds provenance
    (``fetch`` records the source URL).
    """
    import torch

    from facerestore_cli.models import get_method

    src = Path(src).expanduser()
    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    try:
        spec = get_method(method)
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    convert = getattr(spec.module, "convert_official", None)
    if convert is None:
        raise CheckpointError(f"{method} has no converter for official checkpoints; nothing to import")

    source_sha256 = file_sha256(src)
    if src.suffix == _SUFFIX:
        try:
            raw: Any = load_weights(src, verify=False).tensors
        except WeightsError as exc:
            raise CheckpointError(str(exc)) from exc
    else:
        raw = _load_checkpoint(src)
    state, walked = _unwrap_state_dict(raw, src)
    state = _strip_module_prefix(state)
    if walked:
        log.info("%s: using the state dict under %s", src, "/".join(walked))

    try:
        folded, config = convert(state)
    # converters raise ValueError (ConversionError); RuntimeError is e.g. a shape check by load_state_dict
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{src} is not a valid {method} checkpoint: {exc}") from exc

    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else user_weights_dir()
    file_name = name or f"{method}-official"
    if not file_name.endswith(_SUFFIX):
        file_name += _SUFFIX
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    dest = dest_dir / file_name
    dest_dir.mkdir(parents=True, exist_ok=True)

    config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    fp32 = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in folded.items()}
    provenance = {
        "source_file": src.name,
        "source_sha256": source_sha256,
        "imported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **(dict(extra_metadata) if extra_metadata else {}),
    }
    metadata = {"method": method, "config": config_dict, **provenance}
    digest = save_weights(fp32, dest, metadata)
    entry = _entry_for_file(
        dest,
        digest,
        {**metadata, "dtype": "float32", "format_version": WEIGHTS_FORMAT_VERSION},
        **provenance,
    )
    update_manifest(dest_dir, dest.name, entry)
    return ImportResult(
        path=dest,
        method=method,
        config=config,
        sha256=digest,
        size=entry["size"],
        source=src,
        source_sha256=source_sha256,
        manifest_path=dest_dir / MANIFEST_NAME,
        tensor_count=len(fp32),
    )


def initialise_from_stylegan2(checkpoint: Path | str, out: Path | str, *, width: float = 1.0) -> Path:
    """Write a MemGAN weights file whose decoder comes from a clean StyleGAN2-512 generator.

    This is the paper's starting point (its decoder blocks are a pretrained StyleGAN2); the encoder,
    memories and fusions keep their fresh initialisation. Train from it with
    ``facerestore train memgan --init OUT``.
    """
    from facerestore_cli.models.memgan import Config
    from facerestore_cli.models.memgan.network import MemGAN

    source = Path(checkpoint)
    config = Config(width=width)
    model = MemGAN(config)
    try:
        model.load_stylegan2(read_checkpoint(source))
    except ValueError as exc:  # the converter's ConversionError
        raise CheckpointError(f"{source} is not a clean StyleGAN2 generator: {exc}") from exc
    out = Path(out)
    meta = {
        "method": "memgan",
        "config": dataclasses.asdict(config),
        "initialised_from": source.name,
        "source_sha256": file_sha256(source),
        "note": "decoder from a clean StyleGAN2-512 generator; not trained for restoration yet",
    }
    save_weights({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out, meta)
    return out
