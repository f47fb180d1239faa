"""Device selection: the GPU paths are device-agnostic code; here we check how requests resolve."""

from __future__ import annotations

import pytest
import torch

from facerestore_cli.device import DeviceError, make_runtime, resolve_device


def test_auto_and_cpu_resolve_to_a_real_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert auto.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(spec: str) -> None:
    with pytest.raises(DeviceError, match="no CUDA"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "cpu:0"])
def test_unknown_devices_are_rejected(spec: str) -> None:
    if spec == "cuda:x" and not torch.cuda.is_available():
        pytest.skip("parsed only when CUDA exists")
    with pytest.raises(DeviceError):
        resolve_device(spec)


def test_half_precision_is_for_gpus_only() -> None:
    assert make_runtime("cpu").dtype == torch.float32
    with pytest.raises(DeviceError, match="half"):
        make_runtime("cpu", half=True)


def test_threads_are_applied_and_validated() -> None:
    before = torch.get_num_threads()
    try:
        assert make_runtime("cpu", threads=1).threads == 1
        assert torch.get_num_threads() == 1
        with pytest.raises(DeviceError):
            make_runtime("cpu", threads=0)
    finally:
        torch.set_num_threads(before)
