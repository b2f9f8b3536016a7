"""Device names: auto, cpu, cuda and cuda:N resolved, anything else rejected with ValueError."""

from __future__ import annotations

import pytest
import torch

from ropekit._device import resolve_device

BAD_NAMES = ["abacus", "gpu", "mps", "meta", "", "CPU", " cpu", "cpu:0", "cuda:", "cuda:-1", "cuda:x", "cuda:0:1"]


@pytest.fixture
def two_gpus(monkeypatch):
    """Make torch report two CUDA devices (torch.device("cuda", 1) itself needs no GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("name", [None, "auto"])
def test_auto_is_cpu_without_cuda(no_gpu, name):
    assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", [None, "auto"])
def test_auto_is_cuda_with_cuda(two_gpus, name):
    assert resolve_device(name) == torch.device("cuda")


def test_cpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda(two_gpus):
    assert resolve_device("cuda") == torch.device("cuda")


def test_cuda_index(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_rejects_unknown_name(two_gpus, name):
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N") as error:
        resolve_device(name)
    assert f"invalid device {name!r}" in str(error.value)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_rejects_cuda_without_cuda(no_gpu, name):
    with pytest.raises(ValueError, match="CUDA is not available") as error:
        resolve_device(name)
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("name", ["cuda:2", "cuda:17"])
def test_rejects_index_past_device_count(two_gpus, name):
    with pytest.raises(ValueError, match="expected cuda:0 to cuda:1") as error:
        resolve_device(name)
    assert repr(name) in str(error.value)


def test_rejects_non_string():
    with pytest.raises(TypeError, match="device must be a str or None, got int"):
        resolve_device(0)
