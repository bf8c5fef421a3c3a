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
    if dtype.hasobject:
        raise UnsafePickleError(
            f"it holds numpy data of dtype {dtype} (Python objects), which no data file needs; it was not loaded"
        )
    return dtype


class _DataDtype:
    """What a pickle gets for the name ``numpy.dtype``: the dtype it names, unless that holds Python objects."""

    def __new__(cls, *args: Any, **kwargs: Any) -> np.dtype:  # a class, as torch's NEWOBJ and REDUCE both call it
        return _data_dtype(np.dtype(*args, **kwargs))


def _empty_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` as its own pickles call it: an empty array of the named dtype, to be filled from the
    file's data (where the array's shape is checked against the bytes the file holds)."""
    try:
        size = math.prod(operator.index(n) for n in shape)
    except TypeError:
        size = -1
    if subtype not in (_NdarrayName, np.ndarray) or size != 0:
        kind = "ndarray" if subtype is _NdarrayName else repr(subtype)
        raise UnsafePickleError(
            f"it calls numpy's _reconstruct({kind}, {shape!r}, ...), where numpy's own pickles make an empty array "
            "and fill it from the file's data; it was not loaded"
        )
    return np.ndarray(shape, _DataDtype(dtype))


def _plain_dtype_classes(void: bool = True) -> list[type]:
    """numpy 2's dtype classes (numpy.dtypes.Float64DType, ...) but not ObjectDType: a dtype read from a file is
    an instance of one, and calling ObjectDType would make an object dtype. ``void=False`` leaves out VoidDType,
    whose instances take their flags from the file (:func:`_check_built_dtype`)."""
    kinds = [np.dtype(code) for code in np.typecodes["All"]]
    return sorted({type(d) for d in kinds if not d.hasobject and (void or d.kind != "V")}, key=str)


def _numpy_array_globals() -> list[Any]:
    """What unpickling a numpy array or scalar calls, under the names both numpy 1 and numpy 2 write, as torch's
    ``safe_globals`` takes them: (object, name) where a checked stand-in takes the name."""
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2 renamed numpy.core
    named = [(function, f"{package}.multiarray.{name}")
             for name, function in (("_reconstruct", _empty_reconstruct), ("scalar", multiarray.scalar))
             for package in ("numpy.core", "numpy._core")]  # fmt: skip
    # torch builds an array or dtype in place only if its type is allowed: np.ndarray under a name that no file
    # can give (a pickle's names hold no newline), so that only _empty_reconstruct makes one; no void dtype,
    # whose flags the file would set (torch's BUILD cannot be checked): structured arrays are refused
    built = [(np.ndarray, "numpy.ndarray\n(built by _reconstruct)"), *_plain_dtype_classes(void=False)]
    return [(_NdarrayName, "numpy.ndarray"), (_DataDtype, "numpy.dtype"), *built, *named]


@functools.lru_cache(maxsize=1)
def _numpy_pickle_names() -> dict[tuple[str, str], Any]:
    """(module, name) -> object for every global a numpy array, scalar or dtype pickle names, under numpy 1's and
    numpy 2's module names (a file written under one is read under the other); checked stand-ins for those that
    allocate what the file asks for rather than what it holds."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
    names: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NdarrayName, ("numpy", "dtype"): _DataDtype}
    for package in ("numpy.core", "numpy._core"):
        names[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer  # protocol 5 arrays
        names[(f"{package}.multiarray", "_reconstruct")] = _empty_reconstruct
        names[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
    for dtype_class in _plain_dtype_classes():
        names[(dtype_class.__module__, dtype_class.__name__)] = dtype_class  # numpy.dtypes.Float64DType, ...
    return names


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


def _described_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype numpy makes from ``dtype``'s description alone (its fields, subarray or type string), flags
    included: those of ``dtype`` itself may come from a pickle's state."""
    if dtype.subdtype is not None:
        return np.dtype(dtype.subdtype)
    if dtype.names is not None:  # offsets given, so out-of-order and overlapping fields describe themselves too
        fields = [dtype.fields[name] for name in dtype.names]
        spec = {"names": list(dtype.names), "formats": [f[0] for f in fields], "offsets": [f[1] for f in fields],
                "itemsize": dtype.itemsize}  # fmt: skip
        return np.dtype(spec, align=dtype.isalignedstruct)
    return np.dtype(dtype.str)


def _check_built_dtype(dtype: np.dtype) -> None:
    """A dtype after the pickle's BUILD state: numpy takes a void dtype's flags from that state as they are, so a
    file can make a plain 'V8' one whose arrays are unpickled from a list of Python objects (a short list for a
    long shape crashes the interpreter). Its flags must be those numpy gives the dtype it describes."""
    _data_dtype(dtype)
    described = _described_dtype(dtype)
    if dtype.flags != described.flags:
        raise UnsafePickleError(
            f"it gives numpy dtype {dtype} the flags {dtype.flags:#x}, where numpy's own are {described.flags:#x}; "
            "it was not loaded"
        )


class DataUnpickler(pickle._Unpickler):
    """Unpickles plain data only: builtin containers and numbers, numpy arrays, and networkx graphs and their
    views. Any other global the file names (a function to call, a class of some other package) is an
    :class:`UnsafePickleError` naming it, so a pickle from elsewhere cannot run code here. A subclass may map
    a class that is not installed here to a stand-in first (habitat's Observations).

    Python's own unpickler, not the C one: its BUILD step (an object's state) can be checked for numpy dtypes,
    which take flags from it (:func:`_check_built_dtype`)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        built = self.stack[-2]
        if isinstance(built, (type, types.FunctionType)):  # state set on a class would change it for the process
            name = getattr(built, "__qualname__", type(built).__qualname__)
            raise UnsafePickleError(f"it sets the state of {name} itself, not of data built from it; it was not loaded")
        super().load_build()
        if isinstance(built, np.dtype):
            _check_built_dtype(built)

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
        if key in _numpy_pickle_names():
            return _numpy_pickle_names()[key]
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
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if isinstance(exc.__context__, UnsafePickleError):  # a checked numpy stand-in refused (torch re-raises it)
            raise UnsafeTorchFileError(f"{path} is not one of this project's: {exc.__context__}") from None
        try:
            with torch.serialization.safe_globals(allowed):
                unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - not a zip checkpoint at all: torch's own reason below
            unsafe = []
        if "VoidDType" in str(exc):  # torch's BUILD of a dtype type left out of the allowed ones
            raise UnsafeTorchFileError(
                f"{path} is not one of this project's: it holds a numpy structured (void) dtype, whose flags the file "
                "sets itself, and files of this project hold none"
            ) from None
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
