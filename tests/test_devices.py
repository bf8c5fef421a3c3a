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


def test_each_ddppo_rank_gets_its_own_gpu_and_more_ranks_than_gpus_is_named(gpus):
    gpus(2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")  # bare cuda too, not every rank on GPU 0
    gpus(1)
    for name in ("auto", "cuda"):
        with pytest.raises(ConfigError, match=r"^train.device: .* LOCAL_RANK=1 on GPU 1, but torch sees 1 CUDA"):
            resolve_device(name, local_rank=1)


def test_the_ddppo_backend_follows_the_training_device_not_the_machine(gpus, monkeypatch):
    """On a machine with GPUs, ranks training on the CPU need gloo: NCCL cannot move CPU tensors."""
    from asgf_nav.rl import distributed

    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(distributed, "is_distributed", lambda: False)
    gpus(2)
    assert distributed.init_distributed(torch.device("cpu"), rank_id=1, world=2) == (1, 2, 1)
    assert calls == [("init", "gloo")]
    calls.clear()
    distributed.init_distributed(resolve_device("auto", local_rank=1), rank_id=1, world=2)
    assert calls == [("set_device", 1), ("init", "nccl")]
    with pytest.raises(ConfigError, match=r"^train.device: 'cuda:0' puts .* LOCAL_RANK=1 on another rank's GPU"):
        distributed.init_distributed(torch.device("cuda:0"), rank_id=1, world=2)  # NCCL fails on a shared GPU
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RANK", "1")  # a launcher that sets no LOCAL_RANK: the rank, as init_distributed takes it
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.local_rank() == 1


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


def test_another_backend_is_tried_before_it_is_accepted(monkeypatch):
    """mps, xpu, ...: torch names them on any build, so only an allocation tells whether this one has them."""
    tried = []

    def empty(*shape, device):
        tried.append(torch.device(device))
        if torch.device(device).type == "xpu":
            raise AssertionError("Torch not compiled with XPU enabled")
        return torch.zeros(0)

    monkeypatch.setattr(torch, "empty", empty)
    with pytest.raises(ConfigError, match=r"^train.device: 'xpu' is not usable with this torch \(.*\): Torch not "):
        resolve_device("xpu")
    assert resolve_device("mps", key="--device") == torch.device("mps")  # a build that has it
    assert resolve_device("cpu") == torch.device("cpu")
    assert tried == [torch.device("xpu"), torch.device("mps")]  # the CPU is never probed


def test_a_backend_this_torch_lacks_and_the_meta_device_are_named_with_their_key():
    # a device type torch names on every build, but no released wheel can allocate on
    with pytest.raises(ConfigError, match="^--device: 'vulkan' is not usable with this torch"):
        resolve_device("vulkan", key="--device")
    with pytest.raises(ConfigError, match="^train.device: 'meta' holds no data"):
        resolve_device("meta")


def test_usable_cpus_follow_the_affinity_mask(monkeypatch):
    import os

    from asgf_nav.devices import usable_cpus

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 7}, raising=False)
    assert usable_cpus() == 3  # taskset / cpuset: 3 of the machine's 64 cores
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert usable_cpus() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1


def test_rank_0_gets_gpu_0_by_index_like_every_other_rank(gpus):
    """LOCAL_RANK 0 is a rank too: its GPU is cuda:0, not a bare cuda that follows whichever GPU is current."""
    gpus(2)
    assert resolve_device("auto", local_rank=0) == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")


def test_only_the_training_gpus_generator_is_saved_and_restored(monkeypatch):
    """A checkpoint holds the run's own GPU's CUDA generator (none for the CPU or another backend); an older
    checkpoint's list of every GPU's states restores that GPU's entry, or nothing when the list has none."""
    from asgf_nav.devices import cuda_rng_state, restore_cuda_rng_state

    read: list[torch.device] = []
    written: list[tuple[list[int], torch.device]] = []

    def get_rng_state(device: torch.device) -> torch.Tensor:
        read.append(torch.device(device))
        return torch.tensor([7], dtype=torch.uint8)

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: written.append((state.tolist(), device)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert cuda_rng_state("cpu") is None and cuda_rng_state("mps") is None and read == []
    state = cuda_rng_state("cuda:1")
    assert state is not None and state.tolist() == [7] and read == [torch.device("cuda:1")]

    every_gpu = [torch.tensor([10 + i], dtype=torch.uint8) for i in range(3)]
    restore_cuda_rng_state(every_gpu, "cuda:2")
    restore_cuda_rng_state(every_gpu, "cuda")  # no index: the current GPU's entry
    restore_cuda_rng_state(every_gpu[:2], "cuda:2")  # saved on a machine with two GPUs: nothing to restore
    restore_cuda_rng_state(torch.tensor([5], dtype=torch.uint8), "cuda:0")
    restore_cuda_rng_state(torch.tensor([5], dtype=torch.uint8), "cpu")
    restore_cuda_rng_state(None, "cuda:0")
    expected = [([12], torch.device("cuda:2")), ([11], torch.device("cuda")), ([5], torch.device("cuda:0"))]
    assert written == expected


def test_a_ddppo_process_joins_with_its_global_rank_and_a_single_process_joins_nothing(monkeypatch):
    """On the second of two machines RANK (global) and LOCAL_RANK (this machine's) differ: the group takes the
    global rank, the GPU the local one; a single process (world size 1) joins no group and decides alone."""
    from datetime import timedelta

    from asgf_nav.rl import distributed

    joined: list[dict] = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: joined.append(kw))
    monkeypatch.setattr(distributed, "is_distributed", lambda: False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.local_rank() == 1
    assert distributed.init_distributed(torch.device("cpu"), timeout_s=600.0) == (3, 4, 1)
    expected = {"backend": "gloo", "init_method": "env://", "rank": 3, "world_size": 4}
    assert joined == [{**expected, "timeout": timedelta(seconds=600)}]

    joined.clear()
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    assert distributed.init_distributed(torch.device("cpu")) == (0, 1, 0) and joined == []
    assert distributed.any_rank(True, torch.device("cpu")) is True  # a stop asked for in this process is heard
    assert distributed.any_rank(False, torch.device("cpu")) is False
