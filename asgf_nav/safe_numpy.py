"""Numpy dtypes and arrays from a file's pickled state, checked first. Numpy's own ``__setstate__`` takes a dtype's
or an array's state as the file gives it: a field's dtype given as text, a subarray or field larger than its item,
object flags on a plain type, a datetime without its unit each crashed the interpreter or read outside the array.
Here the state is checked against what numpy writes, a dtype is made by ``np.dtype`` from what it describes and an
array filled from exactly its bytes (:mod:`asgf_nav.safe_load` reads the files)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle (a SoundSpaces graph or views file) that names something besides plain data: unpickling it
    would call what it names."""


class NdarrayName:
    """What a pickle gets for the name ``numpy.ndarray``. Numpy's own pickles pass it to ``_reconstruct`` (which
    makes an empty array and fills it from the file's data); called, or its ``__new__``, it is refused: a few bytes
    calling ``numpy.ndarray((10**9,), object)`` would allocate and fill a billion slots."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "it calls numpy.ndarray, which allocates whatever shape it is given, where numpy's own pickles fill an "
            "array from the file's data; it was not loaded"
        )


def data_dtype(dtype: Any) -> np.dtype:
    """``dtype`` if it holds plain data laid out within its item: an array of Python objects could hold anything
    (numpy's unpickling of one trusts the file's shape: a short list for a long shape crashes the interpreter), and
    a field or subarray beyond the item is read and written outside the array."""
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"it gives a {type(dtype).__name__} where a numpy dtype belongs; it was not loaded")
    if dtype.hasobject:
        raise UnsafePickleError(
            f"it holds numpy data of dtype {dtype} (Python objects), which no data file needs; it was not loaded"
        )
    problem = _layout_problem(dtype)
    if problem is not None:
        raise UnsafePickleError(f"it gives a numpy dtype {problem}; it was not loaded")
    return dtype


def _layout_problem(dtype: np.dtype) -> str | None:
    """What lies outside ``dtype``'s item, in Python integers: numpy sums offsets and sizes in a C int, so a layout
    past 2**31 passes its own checks (np.dtype('V2147483647,V2147483647,V10') is an 8-byte item)."""
    if not 0 <= dtype.itemsize < MAX_ITEMSIZE:
        return f"an item of {dtype.itemsize} bytes"
    if dtype.subdtype is not None:
        item, shape = dtype.subdtype
        if item.itemsize * math.prod(shape) != dtype.itemsize:
            return f"a subarray of {shape} items of {item.itemsize} bytes in an item of {dtype.itemsize}"
        return _layout_problem(item)
    for name in dtype.names or ():
        field, offset = dtype.fields[name][:2]
        if not 0 <= offset <= dtype.itemsize - field.itemsize:
            return f"field {name!r} of {field.itemsize} bytes at offset {offset} in an item of {dtype.itemsize}"
        problem = _layout_problem(field)
        if problem is not None:
            return problem
    return None


# Torch's reader calls __setstate__ on objects of allowed types: there a dtype or array stands as one of these
# stand-ins until its state comes (without_stand_ins swaps them out of the result). DataUnpickler checks its
# BUILD step itself.
class DtypeFromFile:
    def __init__(self, base: np.dtype) -> None:
        self.value, self._built = base, False

    def __setstate__(self, state: Any) -> None:
        if self._built:
            raise UnsafePickleError(f"it sets the state of numpy dtype {self.value} twice; it was not loaded")
        self.value, self._built = dtype_from_state(self.value, state), True


class ArrayFromFile:
    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise UnsafePickleError("it sets the state of a numpy array twice; it was not loaded")
        self.value = array_from_state(state)


def resolved(value: Any) -> Any:
    """The dtype or array a stand-in holds (once its state is set), anything else as it is."""
    return value.value if isinstance(value, (DtypeFromFile, ArrayFromFile)) else value


class DataDtype:
    """What a pickle gets for the name ``numpy.dtype``: the dtype it names (unless that holds Python objects), as
    a stand-in that takes its state (:class:`DtypeFromFile`)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> DtypeFromFile:  # a class: torch's NEWOBJ and REDUCE call it
        return DtypeFromFile(named_dtype(*args, **kwargs))


def named_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    """``np.dtype`` as numpy's pickles call it, on a type's name ('f8', 'V12', 'M8': its fields, shape and unit come
    in its state) and two flags: a spec of fields, each a list shared through the memo, is read again for every
    reference (24 levels of a few bytes each took seconds and gigabytes)."""
    name, flags = (args[0] if args else None), args[1:]
    if type(name) is not str or len(name) > 64:
        raise UnsafePickleError(
            f"it calls numpy.dtype on a {type(name).__name__}, where numpy's pickles name a type ('f8') and give its "
            "fields in its state; it was not loaded"
        )
    if len(flags) > 2 or any(type(f) not in (bool, int) or f not in (0, 1) for f in flags) or kwargs:  # numpy 1: 0, 1
        raise UnsafePickleError(f"it calls numpy.dtype({name!r}) with flags other than numpy's; it was not loaded")
    return data_dtype(np.dtype(*args))


MAX_DIMS = 64  # numpy's own limit (32 before numpy 2)


def _whole_numbers(values: Any, what: str) -> tuple[int, ...]:
    """Sizes numpy can hold (a size of thousands of digits, repeated through the memo, took minutes to multiply)."""
    few_ints = type(values) is tuple and len(values) <= MAX_DIMS and all(type(n) is int for n in values)
    if few_ints and all(0 <= n < 2**63 for n in values):
        return values
    # not the repr of anything else: a list shared through the memo prints in exponential time
    shown = repr(values) if few_ints and all(n.bit_length() < 64 for n in values) else f"a {type(values).__name__}"
    raise UnsafePickleError(f"it gives numpy {what} {shown}, not a tuple of sizes; it was not loaded")


MAX_ITEMSIZE = 2**31  # numpy keeps an item's size and its fields' offsets in a C int
_MAX_EMPTY_ITEMS = 2**20  # items of size 0 that a file may ask for: a copy of more would still allocate per item


def dtype_from_state(base: np.dtype, state: Any) -> np.dtype:
    """The dtype that ``state`` (numpy's version 3 or 4 dtype state, for the dtype ``base`` the pickle named) describes,
    made by np.dtype; a state numpy would not write for it is refused."""

    def refused(why: str) -> UnsafePickleError:
        return UnsafePickleError(f"it gives numpy dtype {base} a state numpy does not write ({why}); it was not loaded")

    if type(state) is not tuple or len(state) not in (8, 9) or state[0] != len(state) - 5:
        raise refused("not a version 3 or 4 state")
    byteorder, subarray, names, fields, size, alignment, flags = state[1:8]
    metadata = state[8] if len(state) == 9 else None
    if byteorder not in ("<", ">", "|", "=") or not all(type(n) is int for n in (size, alignment, flags)):
        raise refused("its byte order, size, alignment or flags")
    if base.kind in "Mm":  # the unit travels in the metadata: (user metadata, (unit, count, 1, 1))
        unit = metadata[1] if type(metadata) is tuple and len(metadata) == 2 else None
        if type(unit) is not tuple or len(unit) != 4 or type(unit[0]) is not bytes or type(unit[1]) is not int:
            raise refused("a datetime without its unit")
        if unit[1] < 1:
            raise refused(f"a datetime unit of count {unit[1]}")
        name = unit[0].decode("ascii", errors="replace")
        try:
            described = np.dtype(f"{base.kind}8" if name == "generic" else f"{base.kind}8[{unit[1]}{name}]")
        except (TypeError, ValueError):
            raise refused(f"a datetime unit {unit[1]}{name}") from None
        metadata = metadata[0]
    elif subarray is not None:
        if type(subarray) is not tuple or len(subarray) != 2:
            raise refused("its subarray")
        item, shape = data_dtype(resolved(subarray[0])), _whole_numbers(subarray[1], "subarray shape")
        if item.itemsize * math.prod(shape) >= MAX_ITEMSIZE:
            raise refused(f"a subarray of shape {shape}")
        described = np.dtype((item, shape))
    elif names is not None:
        if type(names) is not tuple or not all(type(n) is str for n in names) or type(fields) is not dict:
            raise refused("its field names")
        entries = [fields.get(name) for name in names]
        if not all(type(e) is tuple and len(e) in (2, 3) and type(e[1]) is int and e[1] >= 0 for e in entries):
            raise refused("its fields")
        titles = [e[2] if len(e) == 3 else None for e in entries]
        if not all(t is None or type(t) is str for t in titles) or set(fields) != {*names, *filter(None, titles)}:
            raise refused("its fields beside its names")
        formats = [data_dtype(resolved(e[0])) for e in entries]
        if not 0 <= size < MAX_ITEMSIZE or any(e[1] + f.itemsize > size for e, f in zip(entries, formats)):
            raise refused("a field beyond its item")  # checked here: numpy sums offsets in a C int, which overflows
        spec = {"names": list(names), "formats": formats, "offsets": [e[1] for e in entries], "titles": titles,
                "itemsize": size}  # fmt: skip
        try:
            described = np.dtype(spec, align=bool(flags & 0x80))  # NPY_ALIGNED_STRUCT (numpy 1: a negative byte)
        except (TypeError, ValueError) as exc:
            raise refused(str(exc)) from None
    else:
        described = base  # a plain type, or a string or void one sized by its name
    if byteorder in "<>" and described.newbyteorder(byteorder) != described:  # this machine's order stays '='
        described = described.newbyteorder(byteorder)
    if metadata is not None:
        if type(metadata) is not dict:
            raise refused("its metadata")
        described = np.dtype(described, metadata=metadata)
    same_flags = flags & 0xFF == described.flags  # numpy 1 wrote them as a signed byte
    if size not in (-1, described.itemsize) or alignment not in (-1, described.alignment) or not same_flags:
        raise refused(f"size {size}, alignment {alignment}, flags {flags & 0xFF:#x}")
    return data_dtype(described)


def _claimed_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes an array of ``shape`` and ``dtype`` holds, or -1 (matching no data) for more items of size 0 than a
    file may ask for."""
    items = math.prod(shape)
    return -1 if dtype.itemsize == 0 and items > _MAX_EMPTY_ITEMS else items * dtype.itemsize


def array_from_state(state: Any) -> np.ndarray:
    """The array numpy's version 1 array state describes, its shape, dtype and order checked against the bytes the
    file holds before numpy fills an empty array from them."""
    if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
        raise UnsafePickleError("it gives a numpy array a state numpy does not write; it was not loaded")
    _, shape, dtype, fortran, data = state
    shape, dtype = _whole_numbers(shape, "array shape"), data_dtype(resolved(dtype))
    if type(data) not in (bytes, bytearray) or len(data) != _claimed_bytes(shape, dtype):
        raise UnsafePickleError(
            f"it gives a numpy array of shape {shape} and dtype {dtype} other than its bytes; it was not loaded"
        )
    array = np.ndarray((0,), np.uint8)
    array.__setstate__((1, shape, dtype, fortran, data))
    return array


def check_reconstruct(subtype: Any, shape: Any, dtype: Any) -> None:
    """numpy's ``_reconstruct`` called as numpy's own pickles call it: for an empty array, to be filled from the
    file's data."""
    if subtype is not NdarrayName or shape != (0,) or dtype != b"b":
        kind = "ndarray" if subtype is NdarrayName else repr(subtype)
        raise UnsafePickleError(
            f"it calls numpy's _reconstruct({kind}, {shape!r}, ...), where numpy's own pickles make an empty array "
            "and fill it from the file's data; it was not loaded"
        )


def empty_reconstruct(subtype: Any, shape: Any, dtype: Any) -> ArrayFromFile:
    """numpy's ``_reconstruct`` for torch's reader: an empty array's stand-in, to be filled from the file's data."""
    check_reconstruct(subtype, shape, dtype)
    return ArrayFromFile()


def _checked_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's ``scalar``: one item of a plain dtype read from the file's bytes."""
    dtype = data_dtype(resolved(dtype))
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"it gives a numpy {dtype} scalar other than its bytes; it was not loaded")
    return _numpy_core().multiarray.scalar(dtype, data)


def _checked_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    """numpy's ``_frombuffer`` (protocol 5 arrays): the file's bytes seen as an array of a plain dtype, in C, F or
    (numpy 2.4) ``axis_order`` memory order."""
    dtype, shape = data_dtype(resolved(dtype)), _whole_numbers(shape, "array shape")
    sized = type(buffer) in (bytes, bytearray) and len(buffer) == _claimed_bytes(shape, dtype)
    ordered = order in ("C", "F", "K") and (
        axis_order is None or sorted(_whole_numbers(axis_order, "axis order")) == list(range(len(shape)))
    )
    if not (sized and ordered):
        raise UnsafePickleError(
            f"it gives a numpy array of shape {shape} and dtype {dtype} other than its bytes; it was not loaded"
        )
    arguments = (buffer, dtype, shape, order) if axis_order is None else (buffer, dtype, shape, order, axis_order)
    return _numpy_core().numeric._frombuffer(*arguments)


def _numpy_core() -> Any:
    return np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core


# (module, name) -> what a pickle gets for it, under numpy 1's and numpy 2's module names (a file written under
# one is read under the other)
NUMPY_NAMES: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): NdarrayName,
    ("numpy", "dtype"): DataDtype,
    **{(f"{package}.multiarray", "_reconstruct"): empty_reconstruct for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.multiarray", "scalar"): _checked_scalar for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): _checked_frombuffer for package in ("numpy.core", "numpy._core")},
}


def without_stand_ins(value: Any, seen: dict[int, Any] | None = None) -> Any:
    """``value`` (what torch read) with each stand-in replaced by its dtype or array, through the containers a
    checkpoint holds (keys and set members too); shared parts stay shared. An array whose state never came is
    refused."""
    seen = {} if seen is None else seen
    if id(value) in seen:
        return seen[id(value)]
    if isinstance(value, ArrayFromFile) and value.value is None:
        raise UnsafePickleError("it holds a numpy array without its data; it was not loaded")
    if isinstance(value, (DtypeFromFile, ArrayFromFile)):
        result: Any = value.value
    elif isinstance(value, dict):  # OrderedDict and defaultdict too: their items replaced in place
        seen[id(value)] = value
        items = [(without_stand_ins(k, seen), without_stand_ins(v, seen)) for k, v in value.items()]
        value.clear()
        value.update(items)
        return value
    elif isinstance(value, list):
        seen[id(value)] = value
        value[:] = [without_stand_ins(item, seen) for item in value]
        return value
    elif isinstance(value, set):
        seen[id(value)] = value
        items = [without_stand_ins(item, seen) for item in value]
        value.clear()
        value.update(items)
        return value
    elif type(value) in (tuple, frozenset):
        result = type(value)(without_stand_ins(item, seen) for item in value)
    else:
        return value
    seen[id(value)] = result
    return result
