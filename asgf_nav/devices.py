"""The one place where a device name from a config or a command line becomes a torch device.

A name torch cannot use on this machine (a typo, ``cuda`` on a CPU-only torch, ``cuda:3`` with one GPU, ``mps``
off a Mac) is a ConfigError naming where it came from, raised before any scene is baked or model built.
Also where the CUDA generator of the device a run uses is saved and restored for its checkpoints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from asgf_nav.config import ConfigError

if TYPE_CHECKING:
    import torch  # imported where used: bake workers import usable_cpus and need no torch


def resolve_device(
    name: str | torch.device | None, local_rank: int | None = None, key: str = "train.device"
) -> torch.device:
    """``auto`` (or None) is the GPU when torch sees one, else the CPU. With a ``local_rank`` (a DD-PPO process's
    LOCAL_RANK) a GPU without an index, from ``auto`` or ``cuda``, is that rank's own, ``cuda:local_rank``."""
    import torch

    if name is None or str(name) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}: {str(name)!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}: {str(name)!r} asks for a GPU, but this torch ({torch.__version__}) sees no CUDA device; "
                "use auto or cpu"
            )
        count = torch.cuda.device_count()
        if device.index is None and local_rank is not None:
            if local_rank >= count:
                raise ConfigError(
                    f"{key}: {str(name)!r} puts the process with LOCAL_RANK={local_rank} on GPU {local_rank}, but "
                    f"torch sees {count} CUDA device(s): start at most {count} process(es) per machine "
                    "(torchrun --nproc_per_node) or train on cpu"
                )
            device = torch.device("cuda", local_rank)
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}: {str(name)!r} asks for a GPU index torch does not see ({count} CUDA device(s))")
    elif device.type == "meta":
        raise ConfigError(f"{key}: {str(name)!r} holds no data, nothing can run on it; use auto, cpu or cuda")
    elif device.type != "cpu":
        _check_allocates(device, str(name), key)
    return device


def _check_allocates(device: torch.device, name: str, key: str) -> None:
    """A device type without CUDA's cheap checks (mps, xpu, ...) is tried with an empty tensor, so that a
    backend this torch lacks fails here, naming ``key``, not deep inside a run. CUDA keeps its count checks
    instead: a probe would create a CUDA context (hundreds of MB), for a bare ``cuda`` on GPU 0 from every rank."""
    import torch

    try:
        torch.empty(0, device=device)
    except Exception as exc:  # each backend fails its own way: RuntimeError, AssertionError, NotImplementedError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]  # torch's first sentence
        raise ConfigError(f"{key}: {name!r} is not usable with this torch ({torch.__version__}): {reason}") from None


def devices_to_compare(names: list[str] | None) -> list[torch.device]:
    """The benchmarks' ``--devices``: the CPU, and the GPU when torch sees one, unless names are given."""
    import torch

    if not names:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = [resolve_device(name, key="--devices") for name in names]
    same = [(d.type, d.index or 0) for d in devices]  # cpu and cpu:0, cuda and cuda:0 are one device
    repeated = sorted({str(d) for d, key in zip(devices, same) if same.count(key) > 1})
    if repeated:  # a row each: the second would be timed and printed as if it were another device
        raise ConfigError(f"--devices: {names} names {', '.join(repeated)} more than once")
    return devices


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (taskset, cgroup cpusets, batch schedulers) where the
    OS has one, else every core of the machine; ``os.cpu_count()`` alone oversubscribes a restricted process."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def omp_thread_cap() -> int | None:
    """The user's cap on a process's threads, ``OMP_NUM_THREADS``, or None where it is unset or no count."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(asked) if asked.isdigit() and int(asked) > 0 else None


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (> 0; 0 leaves it) inside the block, and the caller's
    back after it: a function called from a notebook must not leave the notebook on its count."""
    import torch

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def preserved_torch_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """torch's global generators (the CPU's, and ``device``'s when it is a GPU) back as they were after the
    block: a function that seeds them for its own reproducibility must not leave a notebook's later draws
    fixed (a sweep would draw the same settings after every call)."""
    import torch

    device = torch.device(device)
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        yield


def cuda_rng_state(device: torch.device | str) -> torch.Tensor | None:
    """The CUDA generator state of ``device`` when it is a GPU, else None. Only that GPU's: reading every
    GPU's (``get_rng_state_all``) creates a CUDA context on each, in every DD-PPO rank and even in a CPU
    run on a GPU machine."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore_cuda_rng_state(state: torch.Tensor | list | None, device: torch.device | str) -> None:
    """Set ``device``'s CUDA generator from :func:`cuda_rng_state` (or from an older checkpoint's list of
    every GPU's states: the entry of ``device``, if the list has one); nothing for a CPU device."""
    import torch

    device = torch.device(device)
    if state is None or device.type != "cuda":
        return
    if isinstance(state, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(state):
            return
        state = state[index]
    torch.cuda.set_rng_state(state.cpu(), device)
