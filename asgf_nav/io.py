"""Atomic file writes (a reader never sees a half-written checkpoint, array or manifest), and array reads
that turn every kind of damage into one error."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import hashlib
import logging
import math
import os
import re
import resource
import secrets
import shutil
import stat
import subprocess
import sys
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from asgf_nav.errors import UserInputError

logger = logging.getLogger(__name__)


class WriteError(UserInputError, OSError):
    """An :func:`atomic_write` that failed (a full disk, a quota, a read-only or vanished directory); its message
    names the file, the cause and the free space of its file system, and the file written before is kept.
    ``errno`` and ``strerror`` are the cause's (``strerror`` says "No space left on device" for a full disk)."""

    def __init__(self, message: str, error_number: int | None = None, strerror: str | None = None) -> None:
        super().__init__(message)
        self.errno = error_number
        self.strerror = strerror

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a bake worker, it reaches the parent whole
        return (type(self), (self.args[0], self.errno, self.strerror))


_NEARLY_FULL = 1 << 20  # free bytes under which a failed write is put down to a full file system


def readable_size(size: float) -> str:
    """``6.1 GB``; ``42 MB``, ``85 kB`` or ``512 bytes`` for a size that would read ``0.0 GB``."""
    if size >= 1e12:
        return f"{size / 1e12:.1f} TB"
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size:.0f} bytes"


def _write_error(path: Path, exc: BaseException) -> WriteError:
    """What a failed write of ``path`` says: the cause, in one line, with the free space of its file system
    (measured while the half-written temporary still holds its share, so a full disk reads as one); a full
    disk is said to be one even where the writer hid the errno (torch's "unexpected pos 704 vs 598", numpy's
    "1000000 requested and 262128 written")."""
    code = getattr(exc, "errno", None)
    cause = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines() or [type(exc).__name__]
    cause_text = cause[0] if isinstance(exc, OSError) else f"{type(exc).__name__}: {cause[0]}"
    try:
        usage = shutil.disk_usage(next(p for p in path.parents if p.exists()))
    except OSError:
        usage = None
    where = f"{path.parent} has {readable_size(usage.free)} free of {readable_size(usage.total)}" if usage else ""
    if code == errno.EDQUOT:
        return WriteError(
            f"cannot write {path}: disk quota exceeded{_aside(where)}; free space within your quota or point the "
            "output at another file system",
            code, os.strerror(code),
        )  # fmt: skip
    if code == errno.ENOSPC or (code is None and usage is not None and usage.free < _NEARLY_FULL):
        told = "" if code == errno.ENOSPC else f"the writer said {cause_text}"
        return WriteError(
            f"cannot write {path}: no space left on device{_aside(where, told)}; free space there or point the "
            "output at another file system",
            errno.ENOSPC, os.strerror(errno.ENOSPC),
        )  # fmt: skip
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteError(
            f"cannot write {path}: {cause_text}; point the output at a directory you can write", code, cause[0]
        )
    return WriteError(f"cannot write {path}: {cause_text}{_aside(where)}", code, cause[0])


def _aside(*parts: str) -> str:
    said = "; ".join(part for part in parts if part)
    return f" ({said})" if said else ""


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = True) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The file ends with the permissions a plain ``open(path, "w")`` would give it (an existing file's
    mode, else 0o666 less the umask), so data baked into a shared directory stays readable by others.
    With ``durable`` the data reaches the disk before the rename, and the rename before this returns:
    after a power loss ``path`` is the old file or the whole new one, never an empty one, so callers may
    delete what it replaces. Writers of many small files that can be written again (an export) pass
    ``durable=False`` (two syncs cost ~8 ms a file) and call :func:`flush_to_disk` once at the end.

    An OSError or RuntimeError (what torch raises for a full disk) while the file is made, written or
    renamed is a :class:`WriteError` naming ``path``, the cause and the free space there; the temporary file
    is removed and a file already at ``path`` is kept as it was.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_temporary(path)
        write(tmp_path)
        if path.exists():
            os.chmod(tmp_path, stat.S_IMODE(path.stat().st_mode))
        if durable:
            _fsync(tmp_path, os.O_RDONLY)
        os.replace(tmp_path, path)
    except WriteError:  # a nested atomic write (a writer that writes a file of its own) named its file
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as exc:
        error = _write_error(path, exc)
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise error from exc
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise
    if not durable:
        return path
    try:
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some file systems refuse to sync a directory; the file itself is on disk
        pass
    return path


def flush_to_disk() -> None:
    """Wait until every written file is on disk (after a batch of ``durable=False`` writes)."""
    os.sync()


def _fsync(path: Path, flags: int) -> None:
    """Flush ``path``'s data (``write`` callbacks close their own handles, so it is opened anew)."""
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


_TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # what _new_temporary creates


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the temporary files an :func:`atomic_write` killed outright (SIGKILL, the OOM killer, a power
    loss) left under ``directory``; the caller must hold the lock that keeps every other writer out.
    Returns the bytes freed (a baked stage's temporary can be 150 MB)."""
    return _remove_temporaries(Path(directory).rglob(".*.tmp"))


def remove_stale_temporaries_of(path: str | Path) -> int:
    """Delete the temporaries an :func:`atomic_write` of ``path`` killed outright left beside it; the caller
    must hold the lock that keeps every other writer of ``path`` out. Returns the bytes freed."""
    path = Path(path)
    return _remove_temporaries(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


@contextmanager
def scratch_file_beside(path: str | Path) -> Iterator[Path]:
    """An empty temporary file beside ``path`` for a writer's intermediate output (a video before its sound is
    muxed in), deleted on leaving. It is named as :func:`atomic_write` names its own, so what a write killed
    outright leaves is hidden and removed by :func:`remove_stale_temporaries_of` ``(path)`` too. Tools that
    pick a format by the file's suffix must be told the format."""
    tmp_path = _new_temporary(Path(path))
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


def _remove_temporaries(candidates: Iterable[Path]) -> int:
    freed = 0
    for path in candidates:
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                freed += size
    return freed


def _new_temporary(path: Path) -> Path:
    """An empty, newly created file beside ``path`` (``tempfile.mkstemp`` would make it private)."""
    while True:
        tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp_path


def is_plain_file_name(name: str) -> bool:
    """Whether ``name`` names a file inside a folder and nowhere else: joined to the folder, a name with a
    separator, an absolute one or ``..`` would read or write outside it (names come from shared data files)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\0"))
        and not os.path.isabs(name)
    )


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data), durable)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))  # not the locale's: sounds.json


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, _write)


def atomic_savez(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """``np.savez`` (or ``savez_compressed``) to exactly ``path``, atomically; no ``.npz`` is appended."""
    save = np.savez_compressed if compressed else np.savez

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            save(f, **arrays)

    return atomic_write(path, _write)


# what numpy raises on a damaged .npy / .npz besides ValueError: an emptied file, a zip member whose CRC fails
# or whose compressed stream is broken, and a header its fallback parser tokenizes (bytes overwritten)
_DAMAGED_ARRAY_FILE = (EOFError, zipfile.BadZipFile, zlib.error, SyntaxError, tokenize.TokenError)


def _claimed_bytes(stream: Any) -> int | None:
    """The bytes of data the .npy header at the start of ``stream`` claims, leaving ``stream`` at the data; None
    for a header this does not read (another version, or damaged: numpy then reads it and says what is wrong)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(stream)
        read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
        if version not in read_header:
            return None
        shape, _, dtype = read_header[version](stream)
    except (ValueError, *_DAMAGED_ARRAY_FILE):
        return None
    return math.prod(shape) * dtype.itemsize


def _check_claim(path: str | Path, member: str, claimed: int | None, available: int) -> None:
    """Refuse a header claiming more bytes than follow it: numpy would allocate them all (a MemoryError, or
    gigabytes) before finding the data missing."""
    if claimed is not None and claimed > available:
        where = f"{path} member {member!r}" if member else str(path)
        raise ValueError(f"damaged array file: {where} claims {claimed} bytes of data and holds {max(available, 0)}")


def _memory_error(path: str | Path, exc: MemoryError) -> ValueError:
    return ValueError(f"damaged array file: {path} claims more memory than can be allocated ({exc})")


def load_npy(path: str | Path, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of one .npy file (never a pickle). Damage is a ValueError, whatever numpy raised; an
    OSError (missing, not readable) passes through. A header claiming more data than the file holds is refused
    before anything is allocated."""
    if os.stat(path).st_size == 0:  # numpy 1 read an empty file as a pickle it refused: "contains pickled data"
        raise ValueError("damaged array file (EOFError: No data left in file)")
    try:
        if mmap_mode is not None:  # mapping allocates nothing, and refuses a file shorter than its header claims
            return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        with open(path, "rb") as f:
            _check_claim(path, "", _claimed_bytes(f), os.fstat(f.fileno()).st_size - f.tell())
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except _DAMAGED_ARRAY_FILE as exc:
        raise ValueError(f"damaged array file ({type(exc).__name__}: {exc})") from exc
    except MemoryError as exc:
        raise _memory_error(path, exc) from exc


def limit_reached(exc: BaseException) -> str | None:
    """What an OSError says when a process limit, not the file, stopped a read (too many open files: each
    memory-mapped array keeps one; no memory to map it), else None: such a file needs no baking again."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.ENFILE:
        return f"{exc.strerror}: the system's table of open files is full (fs.file-max); the file is fine"
    if exc.errno == errno.EMFILE:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        how = "the hard limit (ulimit -Hn, /etc/security/limits.conf)" if soft == hard else "it (ulimit -n)"
        return (
            f"{exc.strerror}: the process reached its limit of {soft} open files (every memory-mapped array holds "
            f"one); the file is fine: raise {how} and run again"
        )
    if exc.errno == errno.ENOMEM:
        return f"{exc.strerror}: the process is out of memory or address space to map it; the file is fine"
    return None


def raise_open_file_limit(wanted: int = 65536) -> None:
    """Raise this process's soft limit of open files towards its hard limit (at most ``wanted``): a run keeps
    one file open per memory-mapped scene array, over a thousand on the MP3D-like set, above a common soft
    limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    # an unlimited hard limit can still sit above what the system grants (macOS: kern.maxfilesperproc)
    for limit in (target, 10240, 4096):
        if soft == resource.RLIM_INFINITY or soft >= limit or limit > target:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            return
        except (ValueError, OSError) as exc:  # a container may forbid it: try lower, else the soft limit stays
            logger.debug("cannot raise the open-file limit to %d: %s", limit, exc)


def load_npz(path: str | Path, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every member of an .npz file, read now (numpy reads members lazily, so damage would surface at the
    first use). Damage or a missing ``required`` member is a ValueError; an OSError passes through."""
    try:
        with open(path, "rb") as f:
            with zipfile.ZipFile(f) as archive:  # each member's header, before numpy allocates what it claims
                for info in archive.infolist():
                    with archive.open(info) as member:
                        if member.read(6) != b"\x93NUMPY":  # not an array: numpy returns its bytes
                            continue
                        member.seek(0)
                        _check_claim(path, info.filename, _claimed_bytes(member), info.file_size - member.tell())
            f.seek(0)
            with np.load(f, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
    except _DAMAGED_ARRAY_FILE as exc:
        raise ValueError(f"damaged array file ({type(exc).__name__}: {exc})") from exc
    except MemoryError as exc:
        raise _memory_error(path, exc) from exc
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ValueError(f"no member {missing} (it has {sorted(arrays)})")
    return arrays


def atomic_savefig(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` atomically; the format follows ``path``'s suffix as matplotlib's own would."""
    import matplotlib

    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".").lower() or matplotlib.rcParams["savefig.format"])
    return atomic_write(path, lambda p: fig.savefig(p, **kwargs))


@contextmanager
def exclusive_lock(path: str | Path, what: str, busy: Callable[[], Exception] | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) while ``what`` is being written; yields
    whether it is really held (False where the file system has no ``flock``).

    Another holder is waited for, or with ``busy`` the exception it makes is raised at once. Processes
    that share a data root take it around baking, so that a thing is baked once and never by two writers
    at a time. The OS drops the lock of a killed process, so none is ever left stale.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # read-only: another user's lock file serves too
    except OSError as exc:  # a read-only or full file system: what was to be written cannot be, said in one line
        raise _write_error(path, exc) from exc
    try:
        held = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                raise busy() from None
            logger.info("%s is being written by another process; waiting for it", what)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # some network file systems have no flock: go on as before locks existed
            logger.warning("cannot lock %s (%s); processes sharing it are not kept apart", path, exc.strerror)
            held = False
        yield held
    finally:
        os.close(handle)  # releases the lock


def lock_held(path: str | Path) -> bool:
    """Whether a process holds the ``flock`` of ``path`` right now (a bake or an evaluation in progress).

    Read from Linux's ``/proc/locks``, without taking the lock: a probe that took it, even for a moment,
    could make a real locker that does not wait (an evaluation) fail. Where there is no ``/proc/locks``
    (macOS) such a probe is the only way to tell, a shared lock tried without waiting: a wrong "not held"
    would call a bake in progress damaged. False where there is no such file."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    try:
        table = Path("/proc/locks").read_text(encoding="ascii")
    except OSError:
        return _flock_probe(path)
    key = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146477 0 EOF"; a process waiting for it is listed with "->"
    return any(
        "FLOCK" in fields and "->" not in fields and key in fields for fields in map(str.split, table.splitlines())
    )


def _flock_probe(path: str | Path) -> bool:
    """Whether another open file holds an exclusive ``flock`` of ``path``: a shared lock tried without waiting,
    released at once. False where the file cannot be opened or the file system has no ``flock``."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(handle)  # closing the descriptor releases a lock the probe took
    return False


def file_identity(path: str | Path) -> dict[str, str]:
    """Path and a 16-hex-digit SHA-256 of the file's bytes: what a run records of a model file it reads,
    since the file at that path can be rewritten under it."""
    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}


@functools.cache
def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, its commit and whether tracked files differ from it: what
    a checkpoint or a result records of the code that made it, since figures change with the code. Cached:
    a job calls it as it starts, so a checkout changed under a long run does not pass for its code."""
    import asgf_nav

    version: dict[str, Any] = {"package": asgf_nav.__version__}
    root = Path(asgf_nav.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return version
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # this checkout, not a hook's
    git = ["git", "--no-optional-locks", "-C", str(root)]  # reading must not take the index lock

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run([*git, *args], capture_output=True, timeout=10, env=env, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):  # no git here, or it hung
            return None
        return done.stdout.decode(errors="replace") if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return version
    status = run("status", "--porcelain", "--untracked-files=no")
    return {**version, "commit": commit.strip(), "modified": None if status is None else bool(status.strip())}


def content_digest(value: Any) -> str:
    """A digest of nested containers (mappings, lists, tuples) of tensors, arrays and plain values that is
    the same before and after a ``torch.save`` / ``torch.load`` round trip: what checkpoints record, so
    that damage which still unpickles (a flipped bit in an optimizer moment) is caught on loading."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()[:16]


def _feed(digest: Any, value: Any) -> None:
    torch = sys.modules.get("torch")  # only a tensor's owner has imported torch; this module never needs it
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_sparse:
            value = value.detach().coalesce()
            digest.update(f"S{tuple(value.shape)};".encode())
            _feed(digest, value.indices())
            _feed(digest, value.values())
            return
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
        digest.update(f"A{value.dtype}{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"M{len(value)};".encode())
        for key in sorted(value, key=lambda k: repr(k.item() if isinstance(k, np.generic) else k)):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple, np.ndarray)):  # an object array as a list of its elements
        items = value.reshape(-1).tolist() if isinstance(value, np.ndarray) else value
        digest.update(f"{type(value).__name__}{len(items)};".encode())
        for item in items:
            _feed(digest, item)
    elif isinstance(value, np.generic):  # as its Python value: numpy 1 and 2 print scalars differently
        plain = value.item()
        if isinstance(plain, np.generic):  # one Python has no type for (a long double)
            digest.update(f"G{value.dtype};".encode() + value.tobytes())
        else:
            _feed(digest, plain)
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        digest.update(f"{value!r};".encode())
    else:  # by its type alone: the repr of another object may hold its address
        digest.update(f"<{type(value).__qualname__}>;".encode())


def _nearest_existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists."""
    return next(p for p in (path, *path.parents) if p.exists() or p == p.parent)


def dir_creation_problem(path: str | Path) -> str | None:
    """What plainly stops directory ``path`` from being made (a file on its way, a parent not writable), found
    without creating anything; None where it exists or looks creatable. :func:`writable_dir_problem` makes
    sure, by creating it."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return f"cannot create directory {path}: {existing} is not a directory"
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create directory {path}: {existing} is not writable"
    return None


def unwritable_dir_problem(directory: str | Path) -> str | None:
    """Why nothing could be written in ``directory`` (it, or the nearest folder above it that exists, is on a
    read-only file system or not writable), found without creating anything; None where it can."""
    existing = _nearest_existing(Path(directory))
    if os.access(existing, os.W_OK | os.X_OK):  # says no on a read-only mount, even to root
        return None
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"{existing} is on a read-only file system" if read_only else f"{existing} is not writable"


def writable_dir_problem(path: str | Path) -> str | None:
    """Create directory ``path`` (with its parents) if needed; what stops writing there, or None.

    Checked before long work starts, so that a run does not fail at its last write.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create directory {path}: {exc.strerror or exc}"
    try:  # a real write: os.access says yes to root even where nothing can be created (/proc)
        probe = _new_temporary(path / ".write-probe")
    except OSError as exc:
        return f"directory {path} is not writable: {exc.strerror or exc}"
    probe.unlink()
    return None
