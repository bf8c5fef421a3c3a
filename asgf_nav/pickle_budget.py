"""What a pickle may copy or hash, bounded by its size. A pickle names a container once and refers to it again
through its memo for two bytes: a few bytes calling ``list`` (or ``OrderedDict``, ``set``, a BUILD of an object's
state) on that reference copy the whole container each time, so 160 kB of file made 3.2 GB. Each item a file holds
costs at least a byte of it, so a file that copies each of its containers once or twice stays within
:data:`COPIES_PER_BYTE` items per byte read; beyond that it is refused before the copy is made. Hashing is counted
the same way: a tuple's hash visits every tuple in it, a shared one each time (tuples of one tuple, level on level,
hash in exponential time), and CPython hashes nested tuples in C without a depth check, so tuples nest at most
:data:`MAX_TUPLE_DEPTH` deep. Keys are counted where they are hashed (a dict's or set's items, a call that builds
one, a BUILD's attribute names), and more than :data:`MAX_SHARED_HASH` distinct keys of one hash are refused: ints,
tuples and complex numbers of chosen values collide at will, and each new one is compared with all the others.
What a file makes is then linear in its size: items are not bytes (a character copied out of text is a new object
of some 80 bytes), so the bound is a few hundred times the file at worst."""

from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from asgf_nav.safe_numpy import UnsafePickleError

# items copied per byte read: every item of a container costs a byte of the file at least, and a protocol 2 array's
# data is copied twice (its text into bytes, its bytes into the array): 2 is what such a file needs, 3 leaves room
COPIES_PER_BYTE = 3
FREE_COPIES = 2**16  # items any pickle may copy, however small
MAX_TUPLE_DEPTH = 100  # CPython hashes a tuple in C, one call per level and no depth check: 200,000 levels crashed it
MAX_INT_BITS = 1024  # a generator's state holds 128-bit ints; an int's hash, never kept, takes time with its size
MAX_SHARED_HASH = 64  # distinct keys of one hash: each new one is compared with all the others (quadratic time)
_SPREAD_HASHES = frozenset({str, bytes, float, bool, type(None)})  # randomised, or the value: no chosen collisions
MAX_UNPACK_RATIO = 100  # torch stores its archive's entries as they are; a deflated one unpacks a thousand to one


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


def shared_past_walking(value: Any) -> str | None:
    """What is wrong with walking ``value`` (nested mappings, lists, tuples) item by item, as a digest, a config
    parser or a repr does: containers shared through a pickle's memo are reached once per reference (40 levels of
    [x, x] in 1.7 kB: 2**40 visits). None while the walk stays within a few times the distinct items."""
    reach: dict[int, tuple[Any, int, int]] = {}
    reached = _reached_items(value, reach)
    distinct = sum(own for _, _, own in reach.values())
    if reached > 4 * distinct + FREE_COPIES:
        return f"its {len(reach)} containers are reached {reached} times (shared again and again through the memo)"
    return None


def _reached_items(value: Any, reach: dict[int, tuple[Any, int, int]]) -> int:
    """Items a walk visits in ``value``, each container as often as it is reached, counted once per container
    (``reach``: id -> (container, items reached through it, its own items))."""
    if isinstance(value, Mapping):
        children: Any = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        children = value
    else:
        return 1
    known = reach.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    reached = 1 + sum(_reached_items(child, reach) for child in children)
    reach[id(value)] = (value, reached, 1 + len(children))
    return reached


def _is_pair(item: Any) -> bool:
    """Whether ``dict`` takes ``item`` as a (key, value) pair: any sized item of two (a tuple, a list, an array's
    row, a two-character string)."""
    try:
        return len(item) == 2
    except TypeError:
        return False


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


def _then_checked(load: Callable[[Any], None]) -> Callable[[Any], None]:
    """An opcode's handler followed by a check of what it made (:meth:`CopyBudgetUnpickler.check_made`)."""

    def checked(self: CopyBudgetUnpickler) -> None:
        load(self)
        self.check_made(self.stack[-1])

    return checked


class CopyBudgetUnpickler(pickle._Unpickler):
    """Python's unpickler counting the items each call (REDUCE, NEWOBJ, INST, OBJ) and each BUILD copies from what
    it is given, against the bytes read so far: one past the budget is an :class:`UnsafePickleError`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *args: Any, stored_bytes: int | None = None, **kwargs: Any) -> None:
        """``stored_bytes``: what ``file`` takes where it is stored, when it is unpacked from less (a zip entry
        deflated a thousand to one); the budget grows with the bytes read up to it."""
        super().__init__(file, *args, **kwargs)
        self.items_copied = self._bytes_counted = 0
        self._tuples: dict[int, tuple[tuple, int, int]] = {}  # id -> (a tuple made, items its hash visits, depth)
        self._stored_bytes = stored_bytes
        self._keys_seen: set[Any] = set()  # keys whose hash could be chosen, and how many of each hash
        self._keys_per_hash: dict[int, int] = {}
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
        self._check_budget()

    # What hashes what it is given: each member, or the first of each pair, or a mapping's keys (counted again each
    # time, but where a plain dict's stored hashes are reused). A subclass adds its own stand-ins (the pre-read's).
    HASHING: dict[Any, str] = {set: "members", frozenset: "members", dict: "pairs", OrderedDict: "pairs",
                               defaultdict: "pairs after a factory"}  # fmt: skip

    def spend_on_call(self, func: Any, args: Any) -> None:
        """Count a call's copies, and the keys it hashes where it builds a set or a dict (of a list of pairs, of
        a deque or an array, however the file passes them)."""
        self.spend(args)
        try:
            kind = self.HASHING.get(func)
        except TypeError:  # an unhashable callable: nothing of these
            return
        position = 1 if kind == "pairs after a factory" else 0
        if kind is None or len(args) <= position or isinstance(args[position], _Counted):
            return
        source = args[position]
        if type(source) is dict and func in (dict, defaultdict, set, frozenset):
            return  # these reuse a plain dict's stored hashes; OrderedDict hashes every key again
        try:
            if isinstance(source, Mapping):
                keys = list(source.keys())
            else:
                keys = list(source) if kind == "members" else [pair[0] for pair in source if _is_pair(pair)]
        except TypeError:  # not iterable: the call itself fails
            return
        self.spend_on_hashes(keys)

    def spend_on_hashes(self, keys: Any) -> None:
        """Count the items the hashes of ``keys`` (dict keys, set members) visit, before they are hashed (one costly
        tuple used as the key of many entries is hashed for each), and refuse more than :data:`MAX_SHARED_HASH`
        distinct keys of one hash: an int's hash is its value modulo 2**61 - 1, so every multiple of it hashes to 0,
        and tuples and complex numbers of chosen ints collide as readily; a dict of 80,000 took 42 s."""
        for key in keys:
            kind = type(key)
            if kind in _SPREAD_HASHES or (kind is int and key.bit_length() < 61):
                continue  # hashes spread: randomised (text), or the value itself (small ints)
            if isinstance(key, tuple):  # its hash visits counted before it is hashed
                self.items_copied += self._hash_items(key)[0]
                self._check_budget()
            try:
                shared = hash(key)
            except TypeError:  # not hashable: its insert fails
                continue
            if key in self._keys_seen:
                continue
            count = self._keys_per_hash.get(shared, 0) + 1
            if count > MAX_SHARED_HASH:
                raise UnsafePickleError(
                    f"it gives more than {MAX_SHARED_HASH} distinct keys of one hash ({shared}), each compared with "
                    "all the others when added; it was not loaded"
                )
            self._keys_per_hash[shared] = count
            self._keys_seen.add(key)

    def check_made(self, value: Any) -> None:
        """What an opcode or call made: a tuple is checked for its hash, an int for its size."""
        if isinstance(value, tuple):
            self.check_tuple(value)
        elif type(value) is int and value.bit_length() > MAX_INT_BITS:
            raise UnsafePickleError(
                f"it gives an int of {value.bit_length()} bits, past {MAX_INT_BITS} (its hash, never kept, takes time "
                "with its size at each use); it was not loaded"
            )

    def _check_budget(self) -> None:
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
            visited, depth = self._hash_items(value)
            if depth > MAX_TUPLE_DEPTH:
                raise UnsafePickleError(
                    f"it nests tuples {depth} deep, past {MAX_TUPLE_DEPTH} (hashing one recurses in C once per "
                    "level); it was not loaded"
                )
            if visited > COPIES_PER_BYTE * self._bytes_read() + FREE_COPIES:
                raise UnsafePickleError(
                    f"it makes a tuple whose hash visits {visited} items (tuples shared through its memo) having "
                    f"read {self._bytes_read()} bytes; it was not loaded"
                )

    def _hash_items(self, value: tuple) -> tuple[int, int]:
        """(items a hash of ``value`` visits, how deep its tuples nest), remembered but for short flat tuples (a
        node's coordinates), which are quicker to count again."""
        if len(value) <= 8 and not any(isinstance(item, tuple) for item in value):
            return len(value), 1
        known = self._tuples.get(id(value))
        if known is not None and known[0] is value:
            return known[1], known[2]
        inner = [self._hash_items(item) for item in value if isinstance(item, tuple)]
        items, depth = len(value) + sum(i for i, _ in inner), 1 + max((d for _, d in inner), default=0)
        self._tuples[id(value)] = (value, items, depth)  # the tuple kept: its id stays its own
        return items, depth

    def load_reduce(self) -> None:
        self.spend_on_call(self.stack[-2], self.stack[-1])
        super().load_reduce()
        self.check_made(self.stack[-1])

    def load_newobj(self) -> None:  # frozenset.__new__ fills it
        self.spend_on_call(self.stack[-2], self.stack[-1])
        super().load_newobj()
        self.check_made(self.stack[-1])

    def load_newobj_ex(self) -> None:
        self.spend_on_call(self.stack[-3], (*self.stack[-2], *self.stack[-1].values()))
        super().load_newobj_ex()
        self.check_made(self.stack[-1])

    def _instantiate(self, klass: Any, args: Any) -> None:
        self.spend_on_call(klass, args)
        super()._instantiate(klass, args)
        self.check_made(self.stack[-1])

    def load_setitem(self) -> None:
        self.spend_on_hashes(self.stack[-2:-1])
        super().load_setitem()

    def load_setitems(self) -> None:  # the items since the mark: key, value, key, value...
        self.spend_on_hashes(self.stack[0::2])
        super().load_setitems()

    def load_additems(self) -> None:
        self.spend_on_hashes(self.stack)
        super().load_additems()

    def load_frozenset(self) -> None:
        self.spend_on_hashes(self.stack)
        super().load_frozenset()

    def spend_on_state(self, state: Any) -> None:
        """Count what a BUILD copies: an object's attributes, or (attributes, slots), or numpy's (.., data), and the
        hashes of attribute names that are not text (each set hashes its name again; a tuple's is never kept)."""
        self.items_copied += sum(map(copied_items, (state, *state) if isinstance(state, tuple) else (state,)))
        self._check_budget()
        attributes = state[0] if isinstance(state, tuple) and len(state) == 2 else state
        if isinstance(attributes, dict):
            self.spend_on_hashes(attributes.keys())

    def load_build(self) -> None:
        self.spend_on_state(self.stack[-1])
        super().load_build()

    dispatch[pickle.REDUCE[0]] = load_reduce
    for _opcode in (pickle.INT, pickle.LONG, pickle.LONG1, pickle.LONG4, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2,
                    pickle.TUPLE3):  # fmt: skip
        dispatch[_opcode[0]] = _then_checked(dispatch[_opcode[0]])  # ints and tuples, checked as they are made
    del _opcode
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset


class _CountedSet(_Counted):
    """torch's ``set``, in the pre-read: what it is given is counted as hashed, nothing is built."""


class _CountedOrderedDict(_Counted):
    """torch's ``OrderedDict``, in the pre-read."""


class _CountedCounter(_Counted):
    """torch's ``collections.Counter``, in the pre-read."""


class _CountedScalar(_Counted):
    """A numpy scalar, in the pre-read: its hash is the file's to choose (np.complex128 as complex's), so every one
    counts as sharing one, and more than :data:`MAX_SHARED_HASH` as keys of one file are refused."""

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return self is other


class _TorchPickleCopies(CopyBudgetUnpickler):
    """Reads a torch file's pickle with every name and storage as a :class:`_Counted`, but for the few that may be
    keys: only the copies and hashes counted."""

    def find_class(self, module: str, name: str) -> Any:
        # keys whose hashes a file could choose are made as torch's reader makes them (torch.Size is a tuple)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # protocol 2: __builtin__
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return _PRE_READ_NAMES.get((module, name), _Counted)

    HASHING = {_CountedSet: "members", _CountedOrderedDict: "pairs", _CountedCounter: "members"}

    def persistent_load(self, pid: Any) -> Any:
        return _Counted()


# what torch's reader calls that makes keys of chosen hashes (torch.Size is a tuple), or hashes what it is given
_PRE_READ_NAMES = {
    ("builtins", "complex"): complex,
    ("torch", "Size"): tuple,
    ("builtins", "set"): _CountedSet,
    ("collections", "OrderedDict"): _CountedOrderedDict,
    ("collections", "Counter"): _CountedCounter,
    **{(f"{package}.multiarray", "scalar"): _CountedScalar for package in ("numpy.core", "numpy._core")},
}


def check_torch_file_copies(path: str | Path) -> None:
    """Refuse a torch file whose pickle copies more than its size allows, before torch's reader (which calls
    ``OrderedDict`` and ``set`` and BUILDs an OrderedDict's attributes as often as the file asks) makes the copies.
    Every pickle torch could read is counted: each ``data.pkl`` of a zip archive (torch's is the one in the folder
    of the first entry; a name given twice is read from one entry by torch and another by Python's zipfile), or
    the legacy format's pickles in a row. Anything else wrong with the file is left for torch's reader to report."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > MAX_UNPACK_RATIO * info.compress_size + FREE_COPIES:
                    raise UnsafePickleError(
                        f"its entry {info.filename} unpacks to {info.file_size} bytes from {info.compress_size} "
                        "(torch stores its entries as they are); it was not loaded"
                    )
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
