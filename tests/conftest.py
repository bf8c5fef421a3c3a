"""Fixtures shared by several test modules, and guards that keep tests from leaking state."""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from asgf_nav import termination
from asgf_nav.sounds.bank import SoundBank


@pytest.fixture(scope="module")
def bank() -> SoundBank:
    """The packaged sound bank (loaded once per module, as each module had it)."""
    return SoundBank.load()


@pytest.fixture(scope="module")
def sampler_parts(bank: SoundBank):
    """The sound bank and a small pool of shoebox-room responses for drawing DoA examples."""
    from asgf_nav.models.doa.rooms import shoebox_pool

    return bank, shoebox_pool(4, 3, seed=5, progress=False)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One torch thread: tiny models run faster without thread sync on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def seeded_global_generators() -> None:
    """Tests that draw from torch's, numpy's or Python's global generator (a layer's initial weights, a
    random batch) draw the same numbers whichever tests ran before, so a result does not hang on the order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """A test (or a Trainer it builds with train.torch_threads) that sets torch's thread count must not
    change the numbers of the tests after it: thread counts change float rounding, hence trajectories."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def restore_stop_handling() -> Iterator[None]:
    """A script run in-process installs the stop handlers; later tests get pytest's own again, and no
    recorded signal, so a real Ctrl-C still stops the session and one test's stop does not stop the next."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    names = ("_received", "_deferring", "_deferred", "_shielded", "_held")
    state = {name: getattr(termination, name) for name in names}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    for name, value in state.items():
        setattr(termination, name, value)


def _visible_entries(root: Path) -> set[str]:
    """Entries two levels deep (``runs/eval``, ``data/doa``), hidden ones and caches left out."""
    found: set[str] = set()
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name == "__pycache__" or entry.name.endswith(".egg-info"):
            continue
        found.add(entry.name)
        if entry.is_dir():
            found.update(f"{entry.name}/{child.name}" for child in entry.iterdir() if child.name != "__pycache__")
    return found


@pytest.fixture(autouse=True, scope="session")
def nothing_left_in_the_working_directory() -> Iterator[None]:
    """Scripts' default outputs (``runs/eval``, ``data/doa``) are relative: a test passes its own paths."""
    root = Path.cwd()
    before = _visible_entries(root)
    yield
    created = sorted(_visible_entries(root) - before)
    assert not created, f"tests created {created} in the working directory {root}"
