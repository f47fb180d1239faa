"""References: good photos of the people in an album, compiled once into DMDNet specific
dictionaries (``dictionary``), and the routing of each face to its own person's (``people``).
"""

from __future__ import annotations

from facerestore_cli._lazy import lazy_exports

_D, _P = "facerestore_cli.references.dictionary", "facerestore_cli.references.people"
_EXPORTS = {
    "CompiledDictionary": _D, "DictionaryCache": _D, "DictionaryError": _D, "Embedder": _D,
    "compile_dictionary": _D, "dictionary_key": _D, "dictionary_settings": _D, "reference_files": _D,
    "PeopleIndex": _P, "Person": _P, "Route": _P, "folders_to_compile": _P, "person_folders": _P,
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
