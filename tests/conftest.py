"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from asgf_nav.sounds.bank import SoundBank


@pytest.fixture(scope="module")
def bank() -> SoundBank:
    """The packaged sound bank (loaded once per module, as each module had it)."""
    return SoundBank.load()
