"""The one place where a device name from a config or a command line becomes a torch device.

A name torch cannot use on this machine (a typo, ``cuda`` on a CPU-only torch, ``cuda:3`` with one GPU) is
a ConfigError naming where it came from, raised before any scene is baked or model built.
"""

from __future__ import annotations

import torch

from asgf_nav.config import ConfigError


def resolve_device(
    name: str | torch.device | None, local_rank: int | None = None, key: str = "train.device"
) -> torch.device:
    """``auto`` (or None) is the GPU when torch sees one (``cuda:local_rank`` under DD-PPO), else the CPU."""
    if name is None or str(name) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if local_rank is None else f"cuda:{local_rank}")
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
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}: {str(name)!r} asks for a GPU index torch does not see "
                f"({torch.cuda.device_count()} CUDA device(s))"
            )
    return device


def devices_to_compare(names: list[str] | None) -> list[torch.device]:
    """The benchmarks' ``--devices``: the CPU, and the GPU when torch sees one, unless names are given."""
    if not names:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(name, key="--devices") for name in names]
