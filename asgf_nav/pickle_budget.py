"""What a pickle may copy, bounded by its size. A pickle names a container once and refers to it again through its
memo for two bytes: a few bytes calling ``list`` (or ``OrderedDict``, ``set``, a BUILD of an object's state) on
that reference copy the whole container each time, so 160 kB of file made 3.2 GB. Each item a file holds costs
at least a byte of it, so a file that copies each of its containers once or twice stays within
:data:`COPIES_PER_BYTE` items per byte read; beyond that it is refused before the copy is made. The same bound
holds the items a tuple's hash visits (tuples of one shared tuple, level on level, hash in exponential time).
What a file makes is then linear in its size: items are not bytes (a character copied out of text is a new object
of some 80 bytes), so the bound is a few hundred times the file at worst, not its size."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from asgf_nav.safe_numpy import UnsafePickleError

COPIES_PER_BYTE = 2  # items copied per byte read: every item of a container costs a byte of the file at least
FREE_COPIES = 2**16  # items any pickle may copy, however small


class _Counted:
    """What the torch pre-read (:func:`check_torch_file_copies`) makes of every name and storage: nothing but the
    number of items it could hold, so the pre-read copies nothing and later copies of it are counted in full."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Counted:
        made = super().__new__(cls)
        made.size = sum(map(copied_items, (*args, *kwargs.values())))
        return made

    def __setstate__(self, state: Any) -> None:
        self.size += copied_items(state)

    def append(self, item: Any) -> None:
        self.size += 1

    def extend(self, items: Any) -> None:
        self.size += len(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.size += 1


def copied_items(value: Any) -> int:
    """How many items making a container from ``value`` copies (an array's bytes or its rows, each row a new object
    in a list of it, even rows of no bytes; a container's items)."""
    if isinstance(value, np.ndarray):
        return max(int(value.nbytes), int(value.size), len(value) if value.ndim else 0)
    if isinstance(value, _Counted):
        return value.size
    if hasattr(type(value), "__len__"):
        try:
            return len(value)
        except Exception:  # noqa: BLE001 - an object whose length cannot be taken holds nothing to copy
            return 0
    return 0


class CopyBudgetUnpickler(pickle._Unpickler):
    """Python's unpickler counting the items each call (REDUCE, NEWOBJ, INST, OBJ) and each BUILD copies from what
    it is given, against the bytes read so far: one past the budget is an :class:`UnsafePickleError`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *args: Any, stored_bytes: int | None = None, **kwargs: Any) -> None:
        """``stored_bytes``: what ``file`` takes where it is stored, when it is unpacked from less (a zip entry
        deflated a thousand to one); the budget grows with the bytes read up to it."""
        super().__init__(file, *args, **kwargs)
        self.items_copied = self._bytes_counted = 0
        self._tuples: dict[int, tuple[tuple, int]] = {}  # id -> (a tuple made, the items its hash visits)
        self._stored_bytes = stored_bytes
        try:  # a file's position tells what was read: no cost per read (pickles of protocols 0-3 read each opcode)
            start = file.tell()
            self._position: Callable[[], int] = lambda: file.tell() - start
            return
        except (AttributeError, OSError):
            self._position = lambda: self._bytes_counted
        read, readline = self._file_read, self._file_readline

        def counted_read(*size: Any) -> bytes:
            data = read(*size)
            self._bytes_counted += len(data)
            return data

        def counted_readline() -> bytes:
            line = readline()
            self._bytes_counted += len(line)
            return line

        self._file_read, self._file_readline = counted_read, counted_readline

    def _bytes_read(self) -> int:
        read = self._position()
        return read if self._stored_bytes is None else min(read, self._stored_bytes)

    def spend(self, values: Any) -> None:
        """Count the items copied from each of ``values`` (a call's arguments, a state's parts) before they are."""
        self.items_copied += sum(map(copied_items, values))
        read = self._bytes_read()
        if self.items_copied > COPIES_PER_BYTE * read + FREE_COPIES:
            raise UnsafePickleError(
                f"it copies {self.items_copied} items having read {read} bytes, past the "
                f"{COPIES_PER_BYTE * read + FREE_COPIES} a file of that size may copy; it was not loaded"
            )

    def check_tuple(self, value: Any) -> None:
        """A tuple's hash (a dict key, a set member) visits every item of every tuple in it, a shared one each time:
        tuples of a tuple twice over, each two bytes of memo reference, hash in 2**depth steps. Each tuple made is
        checked against the budget with the items its hash visits (counted once per tuple, children first)."""
        if isinstance(value, tuple):
            visited = self._hash_items(value)
            if visited > COPIES_PER_BYTE * self._bytes_read() + FREE_COPIES:
                raise UnsafePickleError(
                    f"it makes a tuple whose hash visits {visited} items (tuples shared through its memo) having "
                    f"read {self._bytes_read()} bytes; it was not loaded"
                )

    def _hash_items(self, value: tuple) -> int:
        known = self._tuples.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        items = len(value) + sum(self._hash_items(item) for item in value if isinstance(item, tuple))
        self._tuples[id(value)] = (value, items)  # the tuple kept: its id stays its own
        return items

    def load_reduce(self) -> None:
        self.spend(self.stack[-1])
        super().load_reduce()
        self.check_tuple(self.stack[-1])

    def load_newobj(self) -> None:
        self.spend(self.stack[-1])
        super().load_newobj()
        self.check_tuple(self.stack[-1])

    def load_newobj_ex(self) -> None:
        self.spend((*self.stack[-2], *self.stack[-1].values()))
        super().load_newobj_ex()
        self.check_tuple(self.stack[-1])

    def _instantiate(self, klass: Any, args: Any) -> None:
        self.spend(args)
        super()._instantiate(klass, args)
        self.check_tuple(self.stack[-1])

    def load_tuple(self) -> None:
        super().load_tuple()
        self.check_tuple(self.stack[-1])

    def load_tuple2(self) -> None:
        super().load_tuple2()
        self.check_tuple(self.stack[-1])

    def load_tuple3(self) -> None:
        super().load_tuple3()
        self.check_tuple(self.stack[-1])

    def spend_on_state(self, state: Any) -> None:
        """Count what a BUILD copies: an object's attributes, or (attributes, slots), or numpy's (.., data)."""
        self.spend((state, *state) if isinstance(state, tuple) else (state,))

    def load_build(self) -> None:
        self.spend_on_state(self.stack[-1])
        super().load_build()

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.TUPLE[0]] = load_tuple
    dispatch[pickle.TUPLE2[0]] = load_tuple2
    dispatch[pickle.TUPLE3[0]] = load_tuple3
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


class _TorchPickleCopies(CopyBudgetUnpickler):
    """Reads a torch file's pickle with every name and storage as a :class:`_Counted`: only the copies counted."""

    def find_class(self, module: str, name: str) -> Any:
        return _Counted

    def persistent_load(self, pid: Any) -> Any:
        return _Counted()


def check_torch_file_copies(path: str | Path) -> None:
    """Refuse a torch file whose pickle copies more than its size allows, before torch's reader (which calls
    ``OrderedDict`` and ``set`` and BUILDs an OrderedDict's attributes as often as the file asks) makes the copies.
    Every pickle torch could read is counted: each ``data.pkl`` of a zip archive (torch's is the one in the folder
    of the first entry; a name given twice is read from one entry by torch and another by Python's zipfile), or
    the legacy format's pickles in a row. Anything else wrong with the file is left for torch's reader to report."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.rsplit("/", 1)[-1] == "data.pkl":
                    with archive.open(info) as stream:
                        _pre_read(stream, pickles=1, stored_bytes=info.compress_size)
        return
    with open(path, "rb") as stream:  # the legacy format: magic number, protocol, system info, the data, storage keys
        _pre_read(stream, pickles=5)


def _pre_read(stream: BinaryIO, pickles: int, stored_bytes: int | None = None) -> None:
    try:
        for _ in range(pickles):
            _TorchPickleCopies(stream, stored_bytes=stored_bytes).load()
    except UnsafePickleError:
        raise
    except Exception:  # noqa: BLE001 - not a pickle torch reads, or truncated: torch's reader says what is wrong
        return
