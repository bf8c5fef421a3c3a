"""Atomic writes: the target is either the old file or the whole new one, never a partial one."""

from __future__ import annotations

import os
import stat
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


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_of_a_plain_open(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)  # baked data in a shared directory must stay readable by the group where the umask allows
    target = atomic_write_text(tmp_path / "manifest.json", "{}")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("{}")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_a_replaced_file_keeps_its_mode(tmp_path: Path, umask) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_write_text(target, "old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_file_system_without_locks_is_used_unlocked(tmp_path: Path, monkeypatch, caplog) -> None:
    import errno
    import fcntl

    from asgf_nav.io import exclusive_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with caplog.at_level("WARNING"), exclusive_lock(tmp_path / ".bake.lock", "scene"):
        ran.append(True)
    assert ran and "cannot lock" in caplog.text and "No locks available" in caplog.text


def test_the_new_file_and_its_directory_reach_the_disk(tmp_path: Path, monkeypatch) -> None:
    """The file is synced before the rename (else a crash can leave it empty while its predecessor is deleted),
    the directory after it; a file system that refuses a directory sync does not fail the write."""
    target = tmp_path / "ckpt.pt"
    synced: list[tuple[int, bool]] = []  # (inode, whether the target existed then)

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, target.exists()))
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(target, "weights")
    assert target.read_text() == "weights"
    assert synced == [(target.stat().st_ino, False), (tmp_path.stat().st_ino, True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_writes_that_are_not_durable_skip_the_syncs_and_an_export_flushes_once(tmp_path: Path, monkeypatch) -> None:
    """An export writes one file per (receiver, source, yaw): two syncs each would cost ~8 ms a file."""
    import numpy as np

    from asgf_nav.io import atomic_write_bytes
    from asgf_nav.tasks import soundspaces_export
    from asgf_nav.tasks.synthetic import grid_scene

    calls = {"fsync": 0, "sync": 0}
    monkeypatch.setattr(os, "fsync", lambda fd: calls.__setitem__("fsync", calls["fsync"] + 1))
    monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    atomic_write_bytes(tmp_path / "a.bin", b"x", durable=False)
    assert (tmp_path / "a.bin").read_bytes() == b"x" and calls == {"fsync": 0, "sync": 0}
    scene = grid_scene("g", nx=3, nz=2, grid_size=1.0, sample_rate=16000, image_size=4, rir_seconds=0.01)
    monkeypatch.setattr(soundspaces_export, "check_exportable", lambda scene, dataset: None)
    stats = soundspaces_export.export_scene(scene, tmp_path / "out", "mp3d", views=False)
    assert stats.rir_files == 6 * 4 * len(np.asarray(scene.source_nodes))
    assert calls["sync"] == 1 and calls["fsync"] <= 2 * 3  # points, graph, source list: durable; RIRs: one flush


def test_stale_temporaries_are_only_what_atomic_write_names(tmp_path):
    from asgf_nav.io import remove_stale_temporaries

    stale, kept = tmp_path / ".rgb.npy.0a1b2c3d.tmp", tmp_path / ".notes.backup12.tmp"
    stale.write_bytes(b"x"), kept.write_bytes(b"y")
    assert remove_stale_temporaries(tmp_path) == 1 and kept.exists() and not stale.exists()
