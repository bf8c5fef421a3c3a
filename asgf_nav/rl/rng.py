"""The global random generators a run seeds, and the states a checkpoint and a validation's scope keep."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from asgf_nav.devices import cuda_rng_state, restore_cuda_rng_state


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (a rank's start, a validation's scope)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Python, numpy and torch generator states, and ``device``'s CUDA generator when it is a GPU."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    cuda = cuda_rng_state(device)
    if cuda is not None:
        state["cuda"] = cuda
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Set the generators from :func:`capture_rng_state`; the torch states may have been loaded onto a GPU
    (``map_location``), and torch takes them only as CPU byte tensors."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    restore_cuda_rng_state(state.get("cuda"), device)
