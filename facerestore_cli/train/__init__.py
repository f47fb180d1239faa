"""Training the compact models that ship in ``weights/``: degradations, losses, discriminators and the
two trainers. The ``facerestore train`` commands are thin layers over the names listed here.
"""

from __future__ import annotations

from facerestore_cli._lazy import lazy_exports

_D, _M = "facerestore_cli.train.dmdnet", "facerestore_cli.train.memgan"
_EXPORTS = {
    "DMDNetTrainer": _D, "DMDNetTrainOptions": _D, "train_dmdnet": _D,
    "MemGANTrainer": _M, "MemGANTrainOptions": _M, "train_memgan": _M,
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
