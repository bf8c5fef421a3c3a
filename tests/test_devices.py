"""Device names from configs and command lines: auto, and clear errors for devices this machine lacks."""

from __future__ import annotations

import pytest
import torch

from asgf_nav.config import ConfigError
from asgf_nav.devices import resolve_device


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees ``n`` CUDA devices (no CUDA call is made for these names)."""

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


def test_auto_is_the_gpu_of_this_rank_when_there_is_one(gpus):
    gpus(0)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "name, count, message",
    [
        ("gpu0", 2, "'gpu0' is not a torch device (use auto, cpu, cuda or cuda:N)"),
        ("cuda", 0, "'cuda' asks for a GPU, but this torch"),
        ("cuda:2", 2, "'cuda:2' asks for a GPU index torch does not see (2 CUDA device(s))"),
    ],
)
def test_a_device_this_machine_lacks_is_named_with_its_key(gpus, name, count, message):
    gpus(count)
    with pytest.raises(ConfigError) as error:
        resolve_device(name, key="--device")
    assert str(error.value).startswith("--device: ") and message in str(error.value)


def test_benchmarks_compare_the_cpu_and_the_gpu_torch_sees_unless_told(gpus):
    from asgf_nav.devices import devices_to_compare

    gpus(0)
    assert devices_to_compare(None) == [torch.device("cpu")]
    with pytest.raises(ConfigError, match="^--devices: 'cuda' asks for a GPU"):
        devices_to_compare(["cpu", "cuda"])
    gpus(1)
    assert devices_to_compare([]) == [torch.device("cpu"), torch.device("cuda")]
    assert devices_to_compare(["cuda:0"]) == [torch.device("cuda:0")]
