"""Weight files: where they are found, how they are checked, imported from official checkpoints and fetched.

Only the *file* side of weights lives here; turning an official checkpoint's tensors into our layout is
each model module's ``convert_official(state_dict) -> (folded_state_dict, Config)``.

Lookup order
------------
For a method (``dmdnet``, ``memgan``) the first place that has a matching file wins:

1. ``--weights PATH`` (``explicit``): a file is used as given; a folder is searched.
2. ``$FACERESTORE_WEIGHTS``: a file (used only if it is for the method asked for), or a folder to search.
3. The user weights folder: ``$FACERESTORE_HOME/weights`` if ``FACERESTORE_HOME`` is set, else
   ``$XDG_DATA_HOME/facerestore/weights``, else ``~/.local/share/facerestore/weights``.
   ``facerestore weights import`` and ``facerestore weights fetch`` write here.
4. The weights shipped with facerestore: ``facerestore_cli/_bundled_weights/`` in an installed wheel,
   ``<repo>/weights/`` in a source checkout or editable install.

In a folder, a ``*.safetensors`` file belongs to a method when its ``MANIFEST.json`` entry (or, for a file
the manifest does not list, its safetensors metadata) says ``method == <name>``; several matches in one
folder are taken in file-name order. Because the user folder comes before the shipped one, an official
checkpoint imported by the user (``dmdnet-official.safetensors``) wins over the compact shipped file.

Integrity
---------
Every weights folder may hold a ``MANIFEST.json`` (``{"format": 1, "files": {name: entry}}``, entries carry
``sha256``, ``size``, ``method``, ``config``, ``dtype`` and free-form provenance). A file with an entry is
checked (size, then sha256) before it is used, so a truncated or swapped file fails loudly instead of
producing subtly wrong faces. Hashes are cached per process by ``(path, size, mtime_ns)``.

Official ``.pth`` checkpoints are read with ``torch.load(weights_only=True)`` only: a checkpoint that needs
arbitrary pickled Python objects is refused, never executed. Everything else is safetensors.
"""

from __future__ import annotations

# Layers, each importing only those before it: errors, files, manifest, lookup, then checkpoint, download,
# onnx and verify. Nothing inside the package imports this facade.
#
# The names are looked up where they are defined, so a test that replaces one must patch that module,
# e.g. ``monkeypatch.setattr(weights.lookup, "project_weights_dirs", ...)`` or ``weights.files._hash_cache``;
# setting the attribute here would change nothing. ``_hash_cache`` and ``_hash_file`` are private but
# re-exported on purpose (the redundant ``as`` says so): code that read them from the old single module
# still reaches the same objects (reading, or clearing the cache, works; replacing them here does not).
#
# ``weights.download`` is the function: importing it from the submodule of the same name rebinds the name
# after the submodule is loaded, whatever the order of these imports. Reach the module itself as
# ``sys.modules["facerestore_cli.weights.download"]`` if it ever needs patching.
from facerestore_cli.weights.checkpoint import (
    CHECKPOINT_WRAPPER_KEYS,
    ImportResult,
    import_checkpoint,
    initialise_from_stylegan2,
    read_checkpoint,
)
from facerestore_cli.weights.download import download, fetch
from facerestore_cli.weights.errors import (
    CheckpointError,
    DownloadError,
    WeightsError,
    WeightsIntegrityError,
    WeightsNotFound,
)
from facerestore_cli.weights.files import (
    WEIGHTS_FORMAT_VERSION,
    LoadedWeights,
    file_sha256,
    read_safetensors_metadata,
    save_weights,
)
from facerestore_cli.weights.files import _hash_cache as _hash_cache
from facerestore_cli.weights.files import _hash_file as _hash_file
from facerestore_cli.weights.lookup import (
    SearchPlace,
    WeightsLocation,
    list_weights,
    load_weights,
    locate_weights,
    official_source,
    project_weights_dirs,
    search_places,
    user_weights_dir,
)
from facerestore_cli.weights.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    manifest_entry,
    read_manifest,
    update_manifest,
    write_manifest,
)
from facerestore_cli.weights.onnx import OnnxFiles, export_onnx, find_onnx
from facerestore_cli.weights.verify import VerifyResult, verify_all

__all__ = [
    "CHECKPOINT_WRAPPER_KEYS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "WEIGHTS_FORMAT_VERSION",
    "CheckpointError",
    "DownloadError",
    "ImportResult",
    "LoadedWeights",
    "OnnxFiles",
    "SearchPlace",
    "VerifyResult",
    "WeightsError",
    "WeightsIntegrityError",
    "WeightsLocation",
    "WeightsNotFound",
    "download",
    "export_onnx",
    "fetch",
    "file_sha256",
    "find_onnx",
    "import_checkpoint",
    "initialise_from_stylegan2",
    "list_weights",
    "load_weights",
    "locate_weights",
    "manifest_entry",
    "official_source",
    "project_weights_dirs",
    "read_checkpoint",
    "read_manifest",
    "read_safetensors_metadata",
    "save_weights",
    "search_places",
    "update_manifest",
    "user_weights_dir",
    "verify_all",
    "write_manifest",
]
