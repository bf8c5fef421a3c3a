"""Atomic writes: the target is either the old file or the whole new one, never a partial one."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
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


def _disk_with_free(monkeypatch, free: int) -> None:
    import shutil

    from asgf_nav import io

    usage = shutil.disk_usage("/")._replace(total=10**9, used=10**9 - free, free=free)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: usage)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),  # a text write
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch.save
        OSError("1000000 requested and 262128 written"),  # np.save: numpy drops the errno
    ],
    ids=["errno", "torch", "numpy"],
)
def test_a_full_disk_is_one_error_naming_the_file_and_the_free_space(tmp_path: Path, monkeypatch, failure) -> None:
    """However the writer reports a full disk, the error names the file, says the disk is full and how much is
    free, and the file written before stays as it was, with no temporary left beside it."""
    import pickle

    from asgf_nav.io import WriteError

    target = tmp_path / "ckpt.pt"
    atomic_write_text(target, "old")
    _disk_with_free(monkeypatch, 0)

    def full(p: Path) -> None:
        p.write_bytes(b"half")
        raise failure

    with pytest.raises(WriteError) as raised:
        atomic_write(target, full)
    message = str(raised.value)
    assert message.startswith(f"cannot write {target}: no space left on device ({tmp_path} has 0 bytes free of 1.0 GB")
    assert "free space there or point the output at another file system" in message and "\n" not in message
    assert raised.value.errno == 28 and raised.value.strerror == "No space left on device"
    assert isinstance(raised.value, OSError) and raised.value.__cause__ is failure  # callers catching OSError still do
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert str(pickle.loads(pickle.dumps(raised.value))) == message  # as a bake worker's error reaches its parent


def test_a_failed_rename_or_quota_names_the_file_and_other_failures_keep_their_cause(tmp_path: Path, monkeypatch):
    import errno

    from asgf_nav.io import WriteError

    _disk_with_free(monkeypatch, 5 * 10**8)
    target = tmp_path / "out" / "summary.json"

    def refuse(*args: object) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match=rf"cannot write {target}: disk quota exceeded \({target.parent} has 500 MB"):
        atomic_write_text(target, "{}")
    monkeypatch.undo()
    _disk_with_free(monkeypatch, 5 * 10**8)

    def broken(p: Path) -> None:
        raise RuntimeError("ffmpeg failed to mux a.wav into b.mp4:\nlong output")

    with pytest.raises(WriteError) as raised:
        atomic_write(target, broken)  # plenty of space: not said to be full
    assert str(raised.value) == (
        f"cannot write {target}: RuntimeError: ffmpeg failed to mux a.wav into b.mp4: ({target.parent} has 500 MB "
        "free of 1.0 GB)"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_a_read_only_directory_is_named_with_the_file(tmp_path: Path, monkeypatch) -> None:
    import errno

    from asgf_nav import io
    from asgf_nav.io import WriteError

    def read_only(path: Path) -> Path:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(io, "_new_temporary", read_only)
    with pytest.raises(WriteError) as raised:
        atomic_write_text(tmp_path / "rgb.npy", "x")
    assert str(raised.value) == (
        f"cannot write {tmp_path / 'rgb.npy'}: Read-only file system; point the output at a directory you can write"
    )
    assert raised.value.strerror == "Read-only file system"  # what the episode cache's warning shows


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


def test_stale_temporaries_free_their_bytes_in_subdirectories_too(tmp_path: Path) -> None:
    """A killed bake's temporaries anywhere under the directory go, and the count is of bytes, not files."""
    from asgf_nav.io import remove_stale_temporaries

    top, deep = tmp_path / ".rgb.npy.0a1b2c3d.tmp", tmp_path / "acoustics_partial" / ".source_003.npz.deadbeef.tmp"
    deep.parent.mkdir()
    top.write_bytes(b"\0" * 1000)
    deep.write_bytes(b"\0" * 24)
    assert remove_stale_temporaries(tmp_path) == 1024
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["acoustics_partial"]


def test_the_temporary_atomic_write_makes_is_one_a_later_bake_recognises_as_stale(tmp_path: Path) -> None:
    """A write killed outright leaves its temporary: the name it has must be one remove_stale_temporaries deletes."""
    from asgf_nav.io import remove_stale_temporaries

    left_behind = tmp_path / "left_behind"
    left_behind.mkdir()

    def write_and_leave_a_copy(p: Path) -> None:
        p.write_bytes(b"weights")
        (left_behind / p.name).write_bytes(b"weights")  # what SIGKILL at this point would leave beside the target

    atomic_write(tmp_path / "ckpt.pt", write_and_leave_a_copy)
    (leftover,) = left_behind.iterdir()
    assert leftover.name.startswith(".ckpt.pt.") and leftover.name.endswith(".tmp")
    assert remove_stale_temporaries(left_behind) == len(b"weights") and not any(left_behind.iterdir())


@pytest.mark.parametrize("compressed", [False, True])
def test_atomic_savez_compresses_only_when_asked(tmp_path: Path, compressed: bool) -> None:
    """``compressed=True`` deflates the members (as ``np.savez_compressed``); the default stores them."""
    import zipfile

    target = atomic_savez(tmp_path / "a.npz", compressed=compressed, zeros=np.zeros(1000, dtype=np.float32))
    with zipfile.ZipFile(target) as archive:
        kinds = {info.compress_type for info in archive.infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}


def test_an_exclusive_lock_says_whether_it_is_held(tmp_path: Path, monkeypatch, caplog) -> None:
    """The lock yields True where flock works; where the file system has no locks the block still runs,
    unlocked (False), with a warning that says why."""
    import errno
    import fcntl

    from asgf_nav.io import exclusive_lock

    with exclusive_lock(tmp_path / ".bake.lock", "scene") as held:
        assert held is True

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING"), exclusive_lock(tmp_path / ".bake.lock", "scene") as held:
        assert held is False
    assert "cannot lock" in caplog.text and "No locks available" in caplog.text


def test_an_exclusive_lock_keeps_others_out_only_until_its_block_ends(tmp_path: Path) -> None:
    """While held, another taker is refused (``busy``); once the block ends the lock is free again."""
    from asgf_nav.io import exclusive_lock

    lock = tmp_path / ".bake.lock"

    def busy() -> Exception:
        return RuntimeError("busy")

    with exclusive_lock(lock, "scene"):
        with pytest.raises(RuntimeError, match="busy"), exclusive_lock(lock, "scene", busy=busy):
            pass
    with exclusive_lock(lock, "scene", busy=busy) as held:
        assert held is True


def test_a_lock_file_gets_the_mode_of_a_plain_open(tmp_path: Path, umask) -> None:
    """Processes of other users sharing a data root must be able to open the lock file too."""
    from asgf_nav.io import exclusive_lock

    umask(0o002)
    with exclusive_lock(tmp_path / ".bake.lock", "scene"):
        pass
    assert stat.S_IMODE((tmp_path / ".bake.lock").stat().st_mode) == 0o664


def test_a_writable_directory_is_created_and_left_without_the_probe(tmp_path: Path) -> None:
    """The check creates the directory and its parents, and leaves nothing in it."""
    from asgf_nav.io import writable_dir_problem

    run_dir = tmp_path / "runs" / "a"
    assert writable_dir_problem(run_dir) is None
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


# ------------------------------------------------------------------------------ logging set-up (train.log)
def test_setup_logging_sends_each_line_once_to_stderr_and_the_log_file(tmp_path: Path, capsys) -> None:
    """Set up twice (a second run in one process), lines still appear once; the level filters; nothing on stdout."""
    import logging

    from asgf_nav.logging_utils import logging_scope, setup_logging

    log_file = tmp_path / "run" / "logs" / "train.log"  # its directory does not exist yet
    with logging_scope():
        logging.getLogger().setLevel(logging.DEBUG)  # a caller's own level, which setup_logging replaces
        setup_logging("INFO", tmp_path / "first.log")
        assert logging.getLogger().level == logging.INFO
        setup_logging("WARNING", log_file)
        assert logging.getLogger().level == logging.WARNING
        logging.getLogger("asgf_nav.test").warning("checkpoint saved")
        logging.getLogger("asgf_nav.test").info("below the level")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("checkpoint saved") == 1 and "below the level" not in captured.err
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" WARNING asgf_nav.test: checkpoint saved")
    assert "checkpoint saved" not in (tmp_path / "first.log").read_text()


def test_train_log_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """In an ASCII locale a log line with a "±" or an accented path was lost from train.log ("--- Logging
    error ---" on stderr): the log file is UTF-8, as every file the project writes."""
    import os
    import subprocess
    import sys

    code = """if True:
        import logging, sys
        from asgf_nav.logging_utils import setup_logging
        setup_logging("INFO", sys.argv[1])
        logging.getLogger("asgf_nav.t").info("SR 0.5 \\u00b1 0.1 in caf\\u00e9")
    """
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    log = tmp_path / "train.log"
    done = subprocess.run([sys.executable, "-c", code, str(log)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Logging error" not in done.stderr
    assert log.read_text(encoding="utf-8").endswith("asgf_nav.t: SR 0.5 \u00b1 0.1 in caf\u00e9\n")


def test_logging_scope_restores_the_callers_handlers_and_level_and_closes_its_own(tmp_path: Path) -> None:
    """A run inside a notebook leaves the notebook's logging as it was, with the run's log file closed."""
    import logging

    from asgf_nav.logging_utils import logging_scope, setup_logging

    root = logging.getLogger()
    notebook = logging.StreamHandler()
    root.addHandler(notebook)
    try:
        before_handlers, before_level = list(root.handlers), root.level
        with logging_scope():
            setup_logging("DEBUG", tmp_path / "train.log")
            (file_handler,) = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert root.handlers == before_handlers and root.level == before_level
        assert file_handler.stream is None  # closed: logging.FileHandler.close() drops its stream
    finally:
        root.removeHandler(notebook)


@pytest.mark.parametrize("damage", ["header", "emptied", "member", "compressed member"])
def test_every_kind_of_array_file_damage_is_a_value_error(tmp_path: Path, damage: str) -> None:
    """numpy raises TokenError for an overwritten .npy header, EOFError for an emptied file and BadZipFile for
    an .npz member whose CRC fails: callers catch one ValueError (and OSError for a missing file)."""
    from asgf_nav.io import load_npy, load_npz

    npy, npz = tmp_path / "a.npy", tmp_path / "a.npz"
    np.save(npy, np.zeros((3, 4), np.float32))
    save = np.savez_compressed if damage == "compressed member" else np.savez
    save(npz, a=np.arange(4000, dtype=np.float32), b=np.ones(2))
    assert load_npy(npy).shape == (3, 4) and sorted(load_npz(npz, ["a"])) == ["a", "b"]
    if damage == "header":
        data = bytearray(npy.read_bytes())
        data[10:19] = b"{" * 9  # same size, as a byte overwrite leaves it
        npy.write_bytes(bytes(data))
    elif damage == "emptied":
        npy.write_bytes(b"")
    elif damage == "member":
        data = npz.read_bytes()
        npz.write_bytes(data[:3000] + bytes(64) + data[3064:])
    else:  # a broken deflate stream: zlib.error, not a CRC failure
        data = bytearray(npz.read_bytes())
        data[100:140] = b"\xff" * 40
        npz.write_bytes(bytes(data))
    expected = {"member": "Bad CRC-32", "compressed member": "damaged array file"}.get(damage, "damaged array file")
    with pytest.raises(ValueError, match=expected):
        load_npy(npy) if damage in ("header", "emptied") else load_npz(npz)
    np.savez(tmp_path / "b.npz", a=np.ones(1))
    with pytest.raises(ValueError, match=r"no member \['c'\]"):
        load_npz(tmp_path / "b.npz", ["a", "c"])
    with pytest.raises(FileNotFoundError):
        load_npy(tmp_path / "missing.npy")


def test_lock_held_reads_the_lock_table_without_taking_the_lock(tmp_path: Path, monkeypatch) -> None:
    """A probe that took the lock, even for a moment, made a concurrent locker that does not wait (an
    evaluation resuming while report.py looks at it) fail in about one try of seven."""
    import fcntl

    from asgf_nav.io import exclusive_lock, lock_held

    path = tmp_path / ".out.lock"
    assert lock_held(path) is False  # no such file
    with exclusive_lock(path, "an evaluation"):
        with monkeypatch.context() as spying:  # where the table exists, no lock is tried at all
            taken = []
            spying.setattr(fcntl, "flock", lambda *args: taken.append(args))
            assert lock_held(path) is True
            assert taken == [] or not Path("/proc/locks").exists()
    assert lock_held(path) is False
    refused = []

    def busy() -> RuntimeError:
        refused.append(1)
        return RuntimeError("busy")

    probe = (  # another process probing as fast as it can, for a second once its imports are done
        "import sys, time\nfrom asgf_nav.io import lock_held\nprint('ready', flush=True)\nend = time.monotonic() + 1\n"
        f"while time.monotonic() < end:\n    lock_held({str(path)!r})\n"
    )
    prober = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True)
    locked = 0
    try:
        assert prober.stdout.readline() == "ready\n"  # locking while it probes, however slowly it started
        while prober.poll() is None or locked < 100:
            with exclusive_lock(path, "an evaluation", busy=busy):
                locked += 1
    finally:
        if prober.poll() is None:  # the loop failed
            prober.kill()
        prober.wait(timeout=30)
    assert refused == [] and locked > 100


def test_lock_held_tells_a_held_lock_where_there_is_no_lock_table(tmp_path: Path, monkeypatch) -> None:
    """macOS has no /proc/locks: read as "not held", a bake in progress was called damaged and a running
    evaluation stopped. There a probe tells, and leaves the lock free for the next locker."""
    from asgf_nav.io import exclusive_lock, lock_held

    read_text = Path.read_text

    def no_lock_table(self: Path, *args, **kwargs) -> str:
        if str(self) == "/proc/locks":
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_lock_table)
    path = tmp_path / ".out.lock"
    assert lock_held(path) is False  # no such file
    with exclusive_lock(path, "a bake") as held:
        assert held and lock_held(path) is True
    assert lock_held(path) is False
    with exclusive_lock(path, "an evaluation", busy=lambda: RuntimeError("the probe kept the lock")):
        pass


def test_a_scratch_file_beside_an_output_goes_on_leaving_and_is_a_temporary_the_clean_up_knows(tmp_path) -> None:
    """A writer's intermediate file (a video before its sound) is deleted on leaving, an error included; one a
    killed process left is removed by remove_stale_temporaries_of(output) like an atomic_write's own."""
    from asgf_nav.io import remove_stale_temporaries_of, scratch_file_beside

    out = tmp_path / "ep.mp4"
    with pytest.raises(RuntimeError), scratch_file_beside(out) as scratch:
        scratch.write_bytes(b"frames")
        raise RuntimeError("ffmpeg failed")
    assert not scratch.exists() and list(tmp_path.iterdir()) == []
    with scratch_file_beside(out) as scratch:
        scratch.write_bytes(b"frames")
        assert scratch.parent == tmp_path and scratch.name.startswith(".ep.mp4.")
        assert remove_stale_temporaries_of(out) == 6 and not scratch.exists()  # what the next write does after a kill


def test_a_process_limit_is_named_as_such_not_as_a_damaged_file(tmp_path: Path, monkeypatch) -> None:
    """Out of open files, a scene array read said 'bake it again ... --force' about a sound file."""
    import errno

    from asgf_nav.io import limit_reached
    from asgf_nav.scenes import store
    from asgf_nav.scenes.store import SceneStore, SceneStoreError, write_stage

    assert limit_reached(OSError(errno.ENOENT, "No such file or directory")) is None
    assert limit_reached(ValueError("damaged")) is None
    scene = tmp_path / "scenes" / "tiny" / "tiny_room_test"
    write_stage(scene, "layout", {"positions": np.zeros((2, 3), np.float32)})

    def out_of_files(path, mmap_mode=None):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(store, "load_npy", out_of_files)
    with pytest.raises(SceneStoreError, match=r"Too many open files: the process reached its limit of \d+ open files"):
        SceneStore(scene).array("positions")
    with pytest.raises(SceneStoreError) as error:
        SceneStore(scene).array("positions")
    assert "bake it" not in str(error.value) and "the file is fine" in str(error.value)


def test_the_open_file_limit_is_raised_towards_the_hard_limit() -> None:
    """A soft limit of 1024 is below what a run on the MP3D-like set keeps open; scripts raise it."""
    import resource
    import subprocess

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 64:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    code = (
        "import resource; from asgf_nav.io import raise_open_file_limit; raise_open_file_limit(128); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (32, hard)),
    )  # fmt: skip
    assert int(result.stdout) == 128


def test_a_limit_already_at_the_hard_one_says_to_raise_the_hard_one() -> None:
    import resource
    import subprocess

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 64 if hard == resource.RLIM_INFINITY else min(hard, 64)
    code = (
        "import errno; from asgf_nav.io import limit_reached, raise_open_file_limit; raise_open_file_limit(); "
        "print(limit_reached(OSError(errno.EMFILE, 'Too many open files')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    )  # fmt: skip
    assert f"its limit of {limit} open files" in result.stdout and "raise the hard limit (ulimit -Hn" in result.stdout


def test_code_version_names_the_commit_of_a_checkout() -> None:
    """A checkpoint or result records the code that made it: in this checkout, its git commit."""
    import subprocess

    import asgf_nav
    from asgf_nav.io import code_version

    version = code_version()
    assert version["package"] == asgf_nav.__version__
    root = Path(asgf_nav.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("git cannot read this checkout")
    assert version["commit"] == head.stdout.strip() and isinstance(version["modified"], bool)
    code_version.cache_clear()
    try:  # run from a git hook, say: the variables it exports name another repository
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GIT_DIR", "/nonexistent/.git")
            assert code_version()["commit"] == head.stdout.strip()
    finally:
        code_version.cache_clear()


def test_a_lock_that_cannot_be_made_is_a_write_error_naming_it(tmp_path, monkeypatch) -> None:
    """A bake's lock file on a read-only data root cannot be created: one WriteError naming it (the scripts'
    one-line ending), not a traceback of the bare OSError."""
    import errno as errnos
    import os

    from asgf_nav import io

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errnos.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(io.os, "open", read_only)
    lock = tmp_path / "store" / "bell.lock"
    with pytest.raises(io.WriteError, match=rf"cannot write {lock}: Read-only file system; point the output") as raised:
        with io.exclusive_lock(lock, "spectrogram store"):
            pass
    assert raised.value.errno == errnos.EROFS


@pytest.mark.parametrize("compressed", [False, True])
def test_an_array_header_claiming_more_than_the_file_holds_is_a_value_error(tmp_path: Path, compressed: bool) -> None:
    """A header claiming (1e8, 1e8) float32 made numpy raise MemoryError (35 PiB), which callers that catch
    (OSError, ValueError) for a damaged file let through; the claim is refused by name before numpy allocates."""
    import io
    import zipfile

    from numpy.lib import format as npy_format

    from asgf_nav.io import load_npy, load_npz

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**8, 10**8)})
    claiming = header.getvalue() + np.zeros(4, np.float32).tobytes()  # 16 bytes of data
    npz, npy = tmp_path / "pool.npz", tmp_path / "a.npy"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as archive:
        archive.writestr("sample_rate.npy", _npy_bytes(np.array(16000)))
        archive.writestr("rirs.npy", claiming)
    npy.write_bytes(claiming)
    with pytest.raises(ValueError, match=rf"damaged array file: {re.escape(str(npz))} member 'rirs\.npy' claims "
                       r"40000000000000000 bytes of data and holds 16"):  # fmt: skip
        load_npz(npz)
    with pytest.raises(ValueError, match=rf"damaged array file: {re.escape(str(npy))} claims 40000000000000000 bytes"):
        load_npy(npy)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
