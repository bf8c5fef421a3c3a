"""Reading files made elsewhere (checkpoints and DoA heads shared by someone else, SoundSpaces pickles) as data:
nothing the file names is run, and nothing is allocated beyond what the file holds."""

from __future__ import annotations

import _compat_pickle
import builtins
import functools
import math
import operator
import pickle
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class UnsafeTorchFileError(ValueError):
    """A torch file that holds Python objects beyond tensors, containers and numpy arrays: reading it would run
    code the file names, which no file this project writes needs."""


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle (a SoundSpaces graph or views file) that names something besides plain data: unpickling it
    would call what it names."""


_DATA_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray", "bool"}
    | {"object"}  # the base class copyreg._reconstructor is given under protocols 0-1
)
_DATA_COLLECTIONS = frozenset({"OrderedDict", "defaultdict", "deque"})
_SIZED_BUILTINS = frozenset({"bytes", "bytearray"})  # bytes(n), bytearray(n): n zero bytes from a few in the file
# where networkx defines its graphs and their views (not its tests, not modules of functions)
_NETWORKX_CLASS_MODULES = frozenset(
    f"networkx.classes.{name}"
    for name in ("graph", "digraph", "multigraph", "multidigraph", "coreviews", "reportviews")
)


class _NdarrayName:
    """What a pickle gets for the name ``numpy.ndarray``. Numpy's own pickles pass it to ``_reconstruct`` (which
    makes an empty array and fills it from the file's data); called, or its ``__new__``, it is refused: a few bytes
    calling ``numpy.ndarray((10**9,), object)`` would allocate and fill a billion slots."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "it calls numpy.ndarray, which allocates whatever shape it is given, where numpy's own pickles fill an "
            "array from the file's data; it was not loaded"
        )


def _data_dtype(dtype: Any) -> np.dtype:
    """``dtype`` if it holds plain data: an array of Python objects could hold anything, and numpy's unpickling
    of one trusts the file's shape (a short list for a long shape crashes the interpreter)."""
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"it gives a {type(dtype).__name__} where a numpy dtype belongs; it was not loaded")
    if dtype.hasobject:
        raise UnsafePickleError(
            f"it holds numpy data of dtype {dtype} (Python objects), which no data file needs; it was not loaded"
        )
    return dtype


# Numpy's own __setstate__ of a dtype or an array takes the file's state as it is: a dtype's subarray, fields,
# sizes and flags (a string for a field's dtype, a subarray larger than its item, object flags on a plain type, a
# datetime without its unit: each crashed the interpreter). So a file's state is checked here (_dtype_from_state,
# _array_from_state), and the dtype made by np.dtype from what it describes. In torch's reader, whose BUILD step
# calls __setstate__ on objects of allowed types, a dtype or array stands as one of these stand-ins until then;
# DataUnpickler checks its BUILD step itself.
class _DtypeFromFile:
    def __init__(self, base: np.dtype) -> None:
        self.value, self._built = base, False

    def __setstate__(self, state: Any) -> None:
        if self._built:
            raise UnsafePickleError(f"it sets the state of numpy dtype {self.value} twice; it was not loaded")
        self.value, self._built = _dtype_from_state(self.value, state), True


class _ArrayFromFile:
    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise UnsafePickleError("it sets the state of a numpy array twice; it was not loaded")
        self.value = _array_from_state(state)


def _resolved(value: Any) -> Any:
    """The dtype or array a stand-in holds (once its state is set), anything else as it is."""
    return value.value if isinstance(value, (_DtypeFromFile, _ArrayFromFile)) else value


class _DataDtype:
    """What a pickle gets for the name ``numpy.dtype``: the dtype it names (unless that holds Python objects), as
    a stand-in that takes its state (:class:`_DtypeFromFile`)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _DtypeFromFile:  # a class: torch's NEWOBJ and REDUCE call it
        return _DtypeFromFile(_data_dtype(np.dtype(*args, **kwargs)))


def _whole_numbers(values: Any, what: str) -> tuple[int, ...]:
    if type(values) is not tuple or not all(type(n) is int and n >= 0 for n in values):
        raise UnsafePickleError(f"it gives numpy {what} {values!r}, not a tuple of sizes; it was not loaded")
    return values


_MAX_ITEMSIZE = 2**31  # numpy keeps an item's size and its fields' offsets in a C int
_MAX_EMPTY_ITEMS = 2**20  # items of size 0 that a file may ask for: a copy of more would still allocate per item


def _dtype_from_state(base: np.dtype, state: Any) -> np.dtype:
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
        item, shape = _data_dtype(_resolved(subarray[0])), _whole_numbers(subarray[1], "subarray shape")
        if item.itemsize * math.prod(shape) >= _MAX_ITEMSIZE:
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
        formats = [_data_dtype(_resolved(e[0])) for e in entries]
        if not 0 <= size < _MAX_ITEMSIZE or any(e[1] + f.itemsize > size for e, f in zip(entries, formats)):
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
    return _data_dtype(described)


def _claimed_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes an array of ``shape`` and ``dtype`` holds, or -1 (matching no data) for more items of size 0 than a
    file may ask for."""
    items = math.prod(shape)
    return -1 if dtype.itemsize == 0 and items > _MAX_EMPTY_ITEMS else items * dtype.itemsize


def _array_from_state(state: Any) -> np.ndarray:
    """The array numpy's version 1 array state describes, its shape, dtype and order checked against the bytes the
    file holds before numpy fills an empty array from them."""
    if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
        raise UnsafePickleError("it gives a numpy array a state numpy does not write; it was not loaded")
    _, shape, dtype, fortran, data = state
    shape, dtype = _whole_numbers(shape, "array shape"), _data_dtype(_resolved(dtype))
    if type(data) not in (bytes, bytearray) or len(data) != _claimed_bytes(shape, dtype):
        raise UnsafePickleError(
            f"it gives a numpy array of shape {shape} and dtype {dtype} other than its bytes; it was not loaded"
        )
    array = np.ndarray((0,), np.uint8)
    array.__setstate__((1, shape, dtype, fortran, data))
    return array


def _check_reconstruct(subtype: Any, shape: Any, dtype: Any) -> None:
    """numpy's ``_reconstruct`` called as numpy's own pickles call it: for an empty array, to be filled from the
    file's data."""
    if subtype is not _NdarrayName or shape != (0,) or dtype != b"b":
        kind = "ndarray" if subtype is _NdarrayName else repr(subtype)
        raise UnsafePickleError(
            f"it calls numpy's _reconstruct({kind}, {shape!r}, ...), where numpy's own pickles make an empty array "
            "and fill it from the file's data; it was not loaded"
        )


def _empty_reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayFromFile:
    """numpy's ``_reconstruct`` for torch's reader: an empty array's stand-in, to be filled from the file's data."""
    _check_reconstruct(subtype, shape, dtype)
    return _ArrayFromFile()


def _checked_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's ``scalar``: one item of a plain dtype read from the file's bytes."""
    dtype = _data_dtype(_resolved(dtype))
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"it gives a numpy {dtype} scalar other than its bytes; it was not loaded")
    return _numpy_core().multiarray.scalar(dtype, data)


def _checked_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    """numpy's ``_frombuffer`` (protocol 5 arrays): the file's bytes seen as an array of a plain dtype, in C, F or
    (numpy 2.4) ``axis_order`` memory order."""
    dtype, shape = _data_dtype(_resolved(dtype)), _whole_numbers(shape, "array shape")
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
_NUMPY_NAMES: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _DataDtype,
    **{(f"{package}.multiarray", "_reconstruct"): _empty_reconstruct for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.multiarray", "scalar"): _checked_scalar for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): _checked_frombuffer for package in ("numpy.core", "numpy._core")},
}


def _numpy_array_globals() -> list[Any]:
    """The numpy names as torch's ``safe_globals`` takes them, (object, name); and the stand-ins' classes, which
    torch sets state on only when allowed, under names that no file can give (a pickle's names hold no newline)."""
    names = [(value, f"{module}.{name}") for (module, name), value in _NUMPY_NAMES.items()]
    empty = (_UNSIZED["bytes"], "builtins.bytes")  # bytes(): an empty array's data (never a size)
    return [*names, empty, (_DtypeFromFile, "numpy dtype\n(read)"), (_ArrayFromFile, "numpy array\n(read)")]


def _without_stand_ins(value: Any, seen: dict[int, Any] | None = None) -> Any:
    """``value`` (what torch read) with each stand-in replaced by its dtype or array, through the containers a
    checkpoint holds (keys and set members too); shared parts stay shared. An array whose state never came is
    refused."""
    seen = {} if seen is None else seen
    if id(value) in seen:
        return seen[id(value)]
    if isinstance(value, _ArrayFromFile) and value.value is None:
        raise UnsafePickleError("it holds a numpy array without its data; it was not loaded")
    if isinstance(value, (_DtypeFromFile, _ArrayFromFile)):
        result: Any = value.value
    elif isinstance(value, dict):  # OrderedDict and defaultdict too: their items replaced in place
        seen[id(value)] = value
        items = [(_without_stand_ins(k, seen), _without_stand_ins(v, seen)) for k, v in value.items()]
        value.clear()
        value.update(items)
        return value
    elif isinstance(value, (list, set)):
        seen[id(value)] = value
        items = [_without_stand_ins(item, seen) for item in value]
        value.clear()
        value.extend(items) if isinstance(value, list) else value.update(items)
        return value
    elif type(value) in (tuple, frozenset):
        result = type(value)(_without_stand_ins(item, seen) for item in value)
    else:
        return value
    seen[id(value)] = result
    return result


def _unsized(kind: type) -> Callable[..., Any]:
    """``kind`` (bytes or bytearray) as a pickle may call it, from data (``bytearray(b"..")``, ``bytes()``), but
    not from an integer size: a 30-byte pickle calling ``bytearray(10**9)`` would zero-fill a gigabyte."""

    def build(*args: Any, **kwargs: Any) -> Any:
        size = args[0] if args else kwargs.get("source")
        if hasattr(type(size), "__index__"):  # int, bool, numpy integers: a size, not data
            raise UnsafePickleError(
                f"it calls {kind.__name__}({operator.index(size)}), which makes that many zero bytes rather than "
                "reading data from the file; it was not loaded"
            )
        return kind(*args, **kwargs)

    build.__name__ = build.__qualname__ = kind.__name__
    return build


_UNSIZED = {name: _unsized(getattr(builtins, name)) for name in _SIZED_BUILTINS}


class _Memo(dict):
    """An unpickler's memo that finds the keys an object was stored under (to put a dtype or array made from its
    state in its place) without a scan of the whole memo."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[int, list[Any]] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._keys.setdefault(id(value), []).append(key)

    def replace(self, old: Any, new: Any) -> None:
        """``new`` under every key ``old`` was stored under (``old``'s id, free once it is gone, is forgotten)."""
        for key in self._keys.pop(id(old), ()):
            if self.get(key) is old:
                self[key] = new


class DataUnpickler(pickle._Unpickler):
    """Unpickles plain data only: builtin containers and numbers, numpy arrays, and networkx graphs and their
    views. Any other global the file names (a function to call, a class of some other package) is an
    :class:`UnsafePickleError` naming it, so a pickle from elsewhere cannot run code here. A subclass may map
    a class that is not installed here to a stand-in first (habitat's Observations).

    Python's own unpickler, not the C one: its BUILD step (an object's state) can be checked. A numpy dtype or array
    is made plain first (the dtype the file names, an empty array); its BUILD makes the real one from the checked
    state, which takes its place on the stack and in the memo, where the rest of the file finds it."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memo = _Memo()
        self._unbuilt: dict[int, tuple[Any, Callable[[Any], Any]]] = {}  # id -> (object, its maker from state)

    def _dtype(self, *args: Any, **kwargs: Any) -> np.dtype:
        dtype = _data_dtype(np.dtype(*args, **kwargs))
        self._unbuilt[id(dtype)] = (dtype, functools.partial(_dtype_from_state, dtype))
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        _check_reconstruct(subtype, shape, dtype)
        array = np.ndarray((0,), np.uint8)
        self._unbuilt[id(array)] = (array, _array_from_state)
        return array

    def load_build(self) -> None:
        built = self.stack[-2]
        if isinstance(built, (type, types.FunctionType)):  # state set on a class would change it for the process
            name = getattr(built, "__qualname__", type(built).__qualname__)
            raise UnsafePickleError(f"it sets the state of {name} itself, not of data built from it; it was not loaded")
        unbuilt, make = self._unbuilt.pop(id(built), (None, None))
        if unbuilt is built:
            made = make(self.stack.pop())
            self.stack[-1] = made
            self.memo.replace(built, made)
            return
        if isinstance(built, (np.dtype, np.ndarray, np.generic)):  # made already: numpy would take the state as it is
            raise UnsafePickleError(
                f"it sets the state of a numpy {type(built).__name__} made before; it was not loaded"
            )
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 name Python 2's modules (copy_reg, __builtin__), which the default find_class renames
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if module == "builtins" and name in _SIZED_BUILTINS:
            return _UNSIZED[name]
        if (module == "builtins" and name in _DATA_BUILTINS) or (module == "collections" and name in _DATA_COLLECTIONS):
            return super().find_class(module, name)
        if key in (("copyreg", "_reconstructor"), ("_codecs", "encode")):  # protocols 0-2: objects from classes
            return super().find_class(module, name)  # checked here, bytes from text (as torch's weights_only)
        if key in _NUMPY_NAMES:
            found = _NUMPY_NAMES[key]
            return {_DataDtype: self._dtype, _empty_reconstruct: self._reconstruct}.get(found, found)
        if module in _NETWORKX_CLASS_MODULES and "." not in name and not name.startswith("_"):  # no attribute paths
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:  # defined there, not imported (Counter)
                return found  # Graph, DiGraph, their node and edge views; not networkx's functions
        raise UnsafePickleError(
            f"it names {module}.{name}, which is not plain data (builtin containers and numbers, numpy arrays, "
            "networkx graphs); it was not loaded, since unpickling would call it"
        )


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` that runs no code from the file (a checkpoint shared by someone else is data, not a
    program): tensors, Python containers and numbers, and numpy arrays, which checkpoints keep random
    generator states in. Anything else is an :class:`UnsafeTorchFileError` naming what the file asks for."""
    import torch

    allowed = _numpy_array_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return _without_stand_ins(torch.load(path, map_location=map_location, weights_only=True))
    except pickle.UnpicklingError as exc:
        refused = exc if isinstance(exc, UnsafePickleError) else exc.__context__  # torch re-raises the stand-ins'
        if isinstance(refused, UnsafePickleError):
            raise UnsafeTorchFileError(f"{path} is not one of this project's: {refused}") from None
        try:
            with torch.serialization.safe_globals(allowed):
                unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - not a zip checkpoint at all: torch's own reason below
            unsafe = []
        if unsafe:
            raise UnsafeTorchFileError(
                f"{path} is not one of this project's: reading it would run {', '.join(unsafe)}, and files of this "
                "project hold only tensors, numbers and numpy arrays"
            ) from None
        # torch's message is many lines of advice about trusting the file around the one line of its reason
        advice = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please file an issue")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reasons = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines
                   if not line.startswith(advice)]  # fmt: skip
        raise pickle.UnpicklingError(next((r for r in reasons if r), lines[0] if lines else repr(exc))) from None


def weights_mismatch(expected: Mapping[str, Any], given: Any) -> str | None:
    """What keeps weights ``given`` (read from a file) from loading into a network whose
    ``state_dict(keep_vars=True)`` is ``expected`` (built on the meta device, allocating nothing; its own
    parameters, so that weights the network ties under two names count once), naming the first tensor; None
    if they fit.

    A file's settings choose the network's size: checked before it is built for real, a few bytes of settings
    cannot allocate gigabytes. Weights must hold their own data too: a tensor expanded from a few bytes (stride
    0), or many sharing one storage, would pass a shape check and still make the network allocate it all."""
    import torch

    if not isinstance(given, Mapping):
        return f"the weights are a {type(given).__name__}, not a mapping of tensors"
    storages: dict[int, int] = {}
    needed, counted = 0, set()
    for key, tensor in expected.items():
        if key not in given:
            return f"missing tensor {key!r}"
        value = given[key]
        if not isinstance(value, torch.Tensor):
            return f"{key!r} is a {type(value).__name__}, not a tensor"
        if tuple(value.shape) != tuple(tensor.shape):
            return (
                f"size mismatch for {key}: the file holds shape {tuple(value.shape)}, the network's is "
                f"{tuple(tensor.shape)}"
            )
        size = value.numel() * value.element_size()
        storage = value.untyped_storage()
        if storage.nbytes() < size:
            return f"{key!r} holds {storage.nbytes()} bytes for its shape {tuple(value.shape)} of {size} bytes"
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        if id(tensor) not in counted:  # a parameter the network ties under two names is one block of data
            counted.add(id(tensor))
            needed += size
    extra = next((key for key in given if key not in expected), None)
    if extra is not None:
        return f"unexpected tensor {extra!r}"
    if sum(storages.values()) < needed:
        return f"its tensors share {sum(storages.values())} bytes of data for the network's {needed}"
    return None
