"""Spectrogram store: non-source lookups, source slots and the fingerprint's STFT settings."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.tasks.spectrogram import TorchSpectrogram
from asgf_nav.tasks.spectrogram_bake import bake
from asgf_nav.tasks.spectrogram_store import (
    SpectrogramStore,
    SpectrogramStoreError,
    store_fingerprint,
    verification_probes,
)
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SR = 16000


def test_a_lookup_of_a_node_that_holds_no_source_is_not_served_from_another_slot(tmp_path):
    scene = grid_scene("g", nx=3, nz=2, num_sources=2, sample_rate=SR)
    world = synthetic_world([scene], SR)
    spectrogram = TorchSpectrogram(SR)
    bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    store = SpectrogramStore(tmp_path, world, spectrogram)
    sources = [int(s) for s in scene.source_nodes]
    other = next(n for n in range(scene.num_nodes) if n not in sources)
    got = store.lookup(scene, "bell", np.array([0]), np.array([sources[1]]), np.array([2]))
    assert got is not None and got.shape == (1, *spectrogram.shape)
    assert store.lookup(scene, "bell", np.array([0, 1]), np.array([sources[0], other]), np.array([0, 0])) is None


def test_the_fingerprint_records_every_stft_setting():
    scene = grid_scene("g", nx=3, nz=2, num_sources=2, sample_rate=SR)
    world = synthetic_world([scene], SR)
    fp = store_fingerprint(scene, "bell", world.sound("bell"), TorchSpectrogram(SR))
    assert fp["spectrogram"] == {"sample_rate": SR, "n_fft": 512, "hop_length": 160, "win_length": 400, "pool": 4}
    assert set(fp["sound"]) == {"name", "sha256"}


def test_a_store_baked_with_other_source_slots_is_refused_though_the_probes_agree(tmp_path: Path) -> None:
    """Sources reordered where no probe looks (slots 1 and 3 of 5) would serve one source's spectrograms for another."""
    scene = grid_scene("g", nx=3, nz=2, num_sources=5, sample_rate=SR)
    world = synthetic_world([scene], SR)
    bake(tmp_path, scene, "bell", world.sound("bell"), TorchSpectrogram(SR))
    order = np.asarray(scene.source_nodes)[[0, 3, 2, 1, 4]]
    reordered = replace(scene, source_nodes=order)
    assert verification_probes(reordered) == verification_probes(scene)  # the probes cannot tell the two apart
    store = SpectrogramStore(tmp_path, synthetic_world([reordered], SR), TorchSpectrogram(SR))
    with pytest.raises(SpectrogramStoreError, match=r"bell.npy was baked from other data .*scene\.source_nodes: baked"):
        store.lookup(reordered, "bell", np.array([0]), order[1:2], np.array([0]))
