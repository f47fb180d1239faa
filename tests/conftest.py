"""Shared fixtures.

Tests that need the project's shared data read it through ``FACERESTORE_SHARED``: when the variable is
set and the data is missing that is a failure (CI must not silently test less); when it is unset, as on
a user's machine, those tests are skipped with a reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_path(*parts: str) -> Path:
    """Return a path inside ``$FACERESTORE_SHARED``; skip when unset, fail when set but missing."""
    root = os.environ.get("FACERESTORE_SHARED")
    if not root:
        pytest.skip("FACERESTORE_SHARED is not set: the shared data set (../shared) is not available")
    path = Path(root).joinpath(*parts)
    if not path.exists():
        pytest.fail(f"FACERESTORE_SHARED={root} is set but {path} does not exist")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of small-model tests.

    The tiny networks' tensors are too small to share between threads; on a machine shared with other
    jobs every parallel op waits for the second thread to be scheduled (measured: 156 s instead of 18 s
    for test_dmdnet.py, 69 s against 39 s for the golden tests, whose numbers are bitwise equal with 1
    and 2 threads).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def astronaut_rgb():
    """scikit-image's astronaut photo (512x512 RGB uint8, one face)."""
    from skimage import data

    return data.astronaut()
