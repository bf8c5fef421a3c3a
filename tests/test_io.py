"""Atomic writes: the target is either the old file or the whole new one, never a partial one."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asgf_nav.io import atomic_savefig, atomic_savez, atomic_write, atomic_write_text  # noqa: E402


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.txt"
    atomic_write_text(target, "old")

    def half_write(p: Path) -> None:
        p.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_write)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.txt"]


@pytest.mark.parametrize("compressed", [False, True])
def test_atomic_savez_writes_exactly_the_named_file(tmp_path: Path, compressed: bool) -> None:
    target = tmp_path / "deep" / "pool.cache"  # no .npz suffix is appended
    arrays = {"rirs": np.arange(12, dtype=np.float32).reshape(3, 4), "rate": np.int64(16000)}
    assert atomic_savez(target, compressed=compressed, **arrays) == target
    assert [p.name for p in target.parent.iterdir()] == ["pool.cache"]
    with np.load(target) as data:
        np.testing.assert_array_equal(data["rirs"], arrays["rirs"])
        assert int(data["rate"]) == 16000


@pytest.mark.parametrize(("name", "magic"), [("map.png", b"\x89PNG"), ("map.pdf", b"%PDF"), ("map", b"\x89PNG")])
def test_atomic_savefig_writes_the_format_of_the_suffix(tmp_path: Path, name: str, magic: bytes) -> None:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    target = atomic_savefig(fig, tmp_path / name, dpi=20)
    plt.close(fig)
    assert target.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_atomic_savefig_rejects_an_unknown_format_without_leaving_a_file(tmp_path: Path) -> None:
    fig = plt.figure(figsize=(1, 1))
    with pytest.raises(ValueError, match="xyz"):
        atomic_savefig(fig, tmp_path / "map.xyz")
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []
