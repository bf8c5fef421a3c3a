"""Reading files made elsewhere (checkpoints and DoA heads shared by someone else, SoundSpaces pickles) as data:
nothing the file names is run, and what reading it allocates is bounded by the file's size (no size it names is
allocated from nothing, and what it copies is counted: :mod:`asgf_nav.pickle_budget`)."""

from __future__ import annotations

import _compat_pickle
import builtins
import contextlib
import copyreg
import functools
import operator
import pickle
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asgf_nav.pickle_budget import CopyBudgetUnpickler, check_torch_file_copies, shared_past_walking
from asgf_nav.safe_numpy import (
    NUMPY_NAMES,
    ArrayFromFile,
    DataDtype,
    DtypeFromFile,
    UnsafePickleError,
    array_from_state,
    check_reconstruct,
    dtype_from_state,
    empty_reconstruct,
    named_dtype,
    without_stand_ins,
)


class UnsafeTorchFileError(ValueError):
    """A torch file that holds Python objects beyond tensors, containers and numpy arrays: reading it would run
    code the file names, which no file this project writes needs."""


_DATA_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray", "bool"}
    | {"object"}  # the base class copyreg._reconstructor is given under protocols 0-1
)
_DATA_COLLECTIONS = frozenset({"OrderedDict", "defaultdict", "deque"})
_SIZED_BUILTINS = frozenset({"bytes", "bytearray"})  # bytes(n), bytearray(n): n zero bytes from a few in the file
# networkx's graphs and the views a graph keeps of itself once asked for (G.nodes, G.edges, G.adj, G.degree, and the
# directed ones'), each restored by setting attributes; not the data views, whose __setstate__ runs their __init__
# on what the file gives (nbunch_iter over a graph of the file's making)
_NETWORKX_CLASSES = {
    "networkx.classes.graph": {"Graph"},
    "networkx.classes.digraph": {"DiGraph"},
    "networkx.classes.multigraph": {"MultiGraph"},
    "networkx.classes.multidigraph": {"MultiDiGraph"},
    "networkx.classes.coreviews": {"AtlasView", "AdjacencyView", "MultiAdjacencyView"},
    "networkx.classes.reportviews": {
        "NodeView", "DegreeView", "DiDegreeView", "InDegreeView", "OutDegreeView", "MultiDegreeView",
        "DiMultiDegreeView", "InMultiDegreeView", "OutMultiDegreeView", "EdgeView", "OutEdgeView", "InEdgeView",
        "MultiEdgeView", "OutMultiEdgeView", "InMultiEdgeView",
    },
}  # fmt: skip
_NETWORKX_CLASS_MODULES = frozenset(_NETWORKX_CLASSES)


def _numpy_array_globals() -> list[Any]:
    """The numpy names as torch's ``safe_globals`` takes them, (object, name); and the stand-ins' classes, which
    torch sets state on only when allowed, under names that no file can give (a pickle's names hold no newline)."""
    names = [(value, f"{module}.{name}") for (module, name), value in NUMPY_NAMES.items()]
    empty = (_UNSIZED["bytes"], "builtins.bytes")  # bytes(): an empty array's data (never a size)
    return [*names, empty, (DtypeFromFile, "numpy dtype\n(read)"), (ArrayFromFile, "numpy array\n(read)")]


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


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as pickles of protocols 0-2 call it, bytes from their latin-1 text: another codec
    ('hex' doubles its input) chained a few times makes gigabytes from a few hundred bytes of file."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(
            f"it calls _codecs.encode with {type(text).__name__} and {encoding!r}, where pickles turn text into bytes "
            "with latin1 only; it was not loaded"
        )
    return text.encode("latin1")


def _text(*args: Any) -> str:
    """``str`` as a pickle may call it, on text only: a container's text (its repr) a few memo references make twice
    as long at each step, and so does the text of bytes with backslashes."""
    if len(args) > 1 or (args and type(args[0]) is not str):
        raise UnsafePickleError(f"it calls str on a {type(args[0]).__name__}; it was not loaded")
    return str(*args)


@contextlib.contextmanager
def _torch_sizes_from_data_only() -> Iterator[None]:
    """torch's weights-only reader allows ``_codecs.encode`` with any codec and ``bytearray`` of any size, and its
    allow-list cannot be narrowed: while a file is read, the entries of that (cached) list are
    :func:`_latin1_encode` and the checked ``bytearray``, then torch's own again."""
    import torch._weights_only_unpickler as reader

    global _TORCH_SWAP_READERS
    allowed = reader._get_allowed_globals()  # cached by torch: the dict its reader looks names up in
    checked = {"_codecs.encode": _latin1_encode, "builtins.bytearray": _UNSIZED["bytearray"]}
    with _TORCH_SWAP_LOCK:
        if _TORCH_SWAP_READERS == 0:
            _TORCH_SWAP_SAVED.update({name: allowed[name] for name in checked if name in allowed})
            allowed.update({name: checked[name] for name in _TORCH_SWAP_SAVED})
        _TORCH_SWAP_READERS += 1
    try:
        yield
    finally:
        with _TORCH_SWAP_LOCK:
            _TORCH_SWAP_READERS -= 1
            if _TORCH_SWAP_READERS == 0:
                allowed.update(_TORCH_SWAP_SAVED)
                _TORCH_SWAP_SAVED.clear()


_TORCH_SWAP_LOCK = threading.Lock()  # threads reading checkpoints at once share one replacement
_TORCH_SWAP_READERS = 0
_TORCH_SWAP_SAVED: dict[str, Any] = {}


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


def _refuse_graph_from_data(func: Any, args: Any) -> None:
    """A networkx graph is pickled empty with its state after; called on data (another graph, a dict of dicts) it
    copies every edge of it, which a file's few bytes can ask for again and again."""
    if args and isinstance(func, type) and func.__module__ in _NETWORKX_CLASS_MODULES:
        raise UnsafePickleError(f"it makes a networkx {func.__name__} from data; it was not loaded")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` as protocols 0-1 call it: a class made from its builtin base (``object``, or a
    dict's items), the state an object of that base, as copyreg writes it (a Python base's ``__init__`` would be
    called on the state, and a dict's on a list of pairs whose keys no count has seen)."""
    name = getattr(cls, "__name__", type(cls).__name__)
    if state is not None and getattr(base, "__module__", None) != "builtins":
        raise UnsafePickleError(f"it makes a {name} by calling {base!r} on data; it was not loaded")
    if base is not object and type(state) is not base:
        raise UnsafePickleError(
            f"it makes a {name} from a {type(state).__name__} where copyreg gives a {getattr(base, '__name__', base)}; "
            "it was not loaded"
        )
    return copyreg._reconstructor(cls, base, state)


_CALLABLES = (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


class DataUnpickler(CopyBudgetUnpickler):
    """Unpickles plain data only: builtin containers and numbers, numpy arrays, and networkx graphs and their
    views. Any other global the file names (a function to call, a class of some other package) is an
    :class:`UnsafePickleError` naming it, so a pickle from elsewhere cannot run code here. A subclass may map
    a class that is not installed here to a stand-in first (habitat's Observations).

    Python's own unpickler, not the C one: its BUILD step (an object's state) can be checked. A numpy dtype or array
    is made plain first (the dtype the file names, an empty array); its BUILD makes the real one from the checked
    state, which takes its place on the stack and in the memo, where the rest of the file finds it. What it copies is
    bounded by the file's size (:class:`~asgf_nav.pickle_budget.CopyBudgetUnpickler`)."""

    dispatch = dict(CopyBudgetUnpickler.dispatch)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memo = _Memo()
        self._unbuilt: dict[int, tuple[Any, Callable[[Any], Any]]] = {}  # id -> (object, its maker from state)

    def load(self) -> Any:
        loaded = super().load()
        shared = shared_past_walking(loaded)  # what the caller walks, it walks in time linear in the file
        if shared is not None:
            raise UnsafePickleError(f"{shared}; it was not loaded")
        return loaded

    def _dtype(self, *args: Any, **kwargs: Any) -> np.dtype:
        dtype = named_dtype(*args, **kwargs)
        self._unbuilt[id(dtype)] = (dtype, functools.partial(dtype_from_state, dtype))
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        check_reconstruct(subtype, shape, dtype)
        array = np.ndarray((0,), np.uint8)
        self._unbuilt[id(array)] = (array, array_from_state)
        return array

    def load_build(self) -> None:
        built = self.stack[-2]
        if isinstance(built, _CALLABLES):  # state set on a class or function would change it for the process
            name = getattr(built, "__qualname__", type(built).__qualname__)
            raise UnsafePickleError(f"it sets the state of {name} itself, not of data built from it; it was not loaded")
        unbuilt, make = self._unbuilt.pop(id(built), (None, None))
        if unbuilt is built:
            self.spend_on_state(self.stack[-1])
            made = make(self.stack.pop())
            self.stack[-1] = made
            self.memo.replace(built, made)
            return
        if isinstance(built, (np.dtype, np.ndarray, np.generic)):  # made already: numpy would take the state as it is
            raise UnsafePickleError(
                f"it sets the state of a numpy {type(built).__name__} made before; it was not loaded"
            )
        super().load_build()

    def load_reduce(self) -> None:
        _refuse_graph_from_data(self.stack[-2], self.stack[-1])
        super().load_reduce()

    def _instantiate(self, klass: Any, args: Any) -> None:
        _refuse_graph_from_data(klass, args)
        super()._instantiate(klass, args)

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.REDUCE[0]] = load_reduce

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 name Python 2's modules (copy_reg, __builtin__), which the default find_class renames
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if module == "builtins" and name in _SIZED_BUILTINS:
            return _UNSIZED[name]
        if key == ("builtins", "str"):
            return _text
        if key == ("_codecs", "encode"):  # protocols 0-2: bytes from text
            return _latin1_encode
        if (module == "builtins" and name in _DATA_BUILTINS) or (module == "collections" and name in _DATA_COLLECTIONS):
            return super().find_class(module, name)
        if key == ("copyreg", "_reconstructor"):  # protocols 0-1: objects from classes, checked here
            return _reconstructor
        if key in NUMPY_NAMES:
            found = NUMPY_NAMES[key]
            return {DataDtype: self._dtype, empty_reconstruct: self._reconstruct}.get(found, found)
        if name in _NETWORKX_CLASSES.get(module, ()):
            return super().find_class(module, name)
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
        check_torch_file_copies(path)
        with torch.serialization.safe_globals(allowed), _torch_sizes_from_data_only():
            loaded = without_stand_ins(torch.load(path, map_location=map_location, weights_only=True))
        _check_tensor_sizes(loaded)
        shared = shared_past_walking(loaded)
        if shared is not None:
            raise UnsafePickleError(f"{shared}; it was not loaded")
        return loaded
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


def _check_tensor_sizes(loaded: Any) -> None:
    """Each tensor holds its own data: one expanded from a few bytes (stride 0), or many sharing one storage,
    would be materialised in full by the first copy or digest of it (a 4-byte float as gigabytes)."""
    import torch

    claimed, storages, pending, seen = 0, {}, [loaded], set()
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:  # its storage cannot be measured; no file of this project holds one
                raise UnsafePickleError(f"it holds a tensor of layout {value.layout}; it was not loaded")
            size, storage = value.numel() * value.element_size(), value.untyped_storage()
            if storage.nbytes() < size:
                raise UnsafePickleError(
                    f"it holds a tensor of shape {tuple(value.shape)} ({size} bytes) in {storage.nbytes()} bytes of "
                    "data; it was not loaded"
                )
            claimed += size
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
    held = sum(storages.values())
    if claimed > 4 * held + 2**26:  # views of one storage (tied weights) claim it a few times, not thousands
        raise UnsafePickleError(f"its tensors claim {claimed} bytes of {held} bytes of data; it was not loaded")


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
        if value.layout != tensor.layout:
            return f"{key!r} is a tensor of layout {value.layout}, the network's is {tensor.layout}"
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
