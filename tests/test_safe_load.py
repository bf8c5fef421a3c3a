"""Files made elsewhere are read as data: checkpoints through torch's weights-only unpickler, SoundSpaces pickles
through DataUnpickler; nothing they name runs, and what they allocate is bounded by their size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


class _RunsCodeWhenUnpickled:
    """What a malicious (or merely foreign) checkpoint holds: unpickling it calls a function of the file's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_a_torch_file_that_would_run_code_is_refused_before_any_runs(tmp_path: Path) -> None:
    import torch

    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, read_checkpoint
    from asgf_nav.rl.checkpoint import CheckpointError, load_checkpoint
    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file
    from baselines.audio_model import load_model

    marker = tmp_path / "the-file-ran-code"
    path = tmp_path / "shared.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "update": 1, "frames": 0, "rng": {},
                "config": {}, "kind": "selective", "state_dict": _RunsCodeWhenUnpickled(marker)}, path)  # fmt: skip
    readers = [(load_torch_file, UnsafeTorchFileError), (load_checkpoint, CheckpointError),
               (read_checkpoint, DoaCheckpointError), (load_model, CheckpointError)]  # fmt: skip
    for read, error in readers:
        with pytest.raises(error, match=rf"{path} is not one of this project's: reading it would run os.makedirs"):
            read(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the full unpickler: what the readers avoid
    assert marker.is_dir()


def test_numpy_arrays_and_scalars_load_under_the_names_numpy_1_and_2_write(tmp_path: Path) -> None:
    """Checkpoints keep random generator states as numpy arrays; one written under numpy 1 names
    numpy.core.multiarray, one written under numpy 2 numpy._core.multiarray, and both must load anywhere."""
    import zipfile

    import torch

    from asgf_nav.safe_load import load_torch_file

    state = {"mt": np.random.RandomState(3).get_state(), "obs": np.arange(6, dtype=np.float16), "step": np.int64(4)}
    torch.save(state, tmp_path / "written.pt")
    with zipfile.ZipFile(tmp_path / "written.pt") as archive:
        entries = {info: archive.read(info) for info in archive.infolist()}
    for package in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        path = tmp_path / f"{package.decode()}.pt"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for info, data in entries.items():
                if info.filename.endswith("data.pkl"):
                    data = data.replace(b"numpy._core.multiarray", package).replace(b"numpy.core.multiarray", package)
                    assert package + b"\n_reconstruct" in data and package + b"\nscalar" in data
                archive.writestr(info, data)
        loaded = load_torch_file(path)
        assert loaded["mt"][0] == "MT19937" and np.array_equal(loaded["mt"][1], state["mt"][1])
        assert loaded["obs"].dtype == np.float16 and loaded["obs"].tolist() == state["obs"].tolist()
        assert loaded["step"] == 4 and isinstance(loaded["step"], np.int64)


@pytest.mark.parametrize("kind", ["bytearray", "bytes"])
def test_a_data_pickle_calling_bytes_or_bytearray_with_a_size_is_refused(kind: str) -> None:
    """``bytearray(10**9)`` in a 30-byte pickle zero-fills a gigabyte: a call from an integer size is refused,
    while bytes and bytearrays pickled as data load at every protocol."""
    import pickle

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    def load(data: bytes):
        import io

        return DataUnpickler(io.BytesIO(data)).load()

    size = 50_000_000
    bomb = b"\x80\x02cbuiltins\n" + kind.encode() + b"\nJ" + size.to_bytes(4, "little") + b"\x85R."
    assert len(bomb) < 40
    with pytest.raises(UnsafePickleError, match=rf"it calls {kind}\({size}\), which makes that many zero bytes"):
        load(bomb)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        data = {"b": b"ab", "empty": b"", "array": bytearray(b"xy"), "nested": [bytearray(), np.arange(3)]}
        loaded = load(pickle.dumps(data, protocol=protocol))
        assert loaded["b"] == b"ab" and loaded["empty"] == b"" and loaded["array"] == bytearray(b"xy")
        assert type(loaded["array"]) is bytearray and loaded["nested"][0] == bytearray()


class _AllocatesThroughNumpy:
    """Pickles as a call numpy's own pickles never make: a few hundred bytes asking ``numpy.ndarray`` or
    ``_reconstruct`` for a large array, or an array of Python objects whose shape is longer than its data (numpy's
    unpickling trusts the shape: the interpreter crashes)."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct  # numpy 2's name; the readers accept numpy 1's too

        if self.how == "ndarray":
            return np.ndarray, ((50_000_000,), np.dtype("f8"))
        if self.how == "reconstruct":
            return _reconstruct, (np.ndarray, (50_000_000,), b"b")
        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (50_000_000,), np.dtype("O"), False, [None])


@pytest.mark.parametrize("how", ["ndarray", "reconstruct", "object_state"])
def test_a_file_asking_numpy_for_memory_it_does_not_hold_is_refused(tmp_path: Path, how: str) -> None:
    """Checkpoints (read by torch's weights-only unpickler) and SoundSpaces pickles (by DataUnpickler) may hold
    numpy arrays; those are built only as numpy pickles them, empty and then filled from the file's bytes, and of
    plain data. Before, such files allocated what they asked for (object arrays fill every slot) or crashed
    the interpreter."""
    import io
    import pickle
    import resource

    import torch

    from asgf_nav.rl.checkpoint import CheckpointError, load_checkpoint
    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    reason = {"ndarray": r"it calls numpy.ndarray, which allocates whatever shape",
              "reconstruct": r"it calls numpy's _reconstruct\(ndarray, \(50000000,\), ...\), where numpy's own",
              "object_state": r"it holds numpy data of dtype object \(Python objects\)"}[how]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = pickle.dumps({"x": _AllocatesThroughNumpy(how)}, protocol=2)
    assert len(data) < 300
    with pytest.raises(UnsafePickleError, match=reason):
        DataUnpickler(io.BytesIO(data)).load()
    path = tmp_path / "shared.pt"
    torch.save({"model": {}, "optimizer": {}, "update": 1, "frames": 0, "rng": {}, "config": {},
                "x": _AllocatesThroughNumpy(how)}, path)  # fmt: skip
    with pytest.raises(UnsafeTorchFileError, match=rf"{path} is not one of this project's: {reason}"):
        load_torch_file(path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is not one of this project's: {reason}"):
        load_checkpoint(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"the peak memory grew {grown_mb:.0f} MB"
    for protocol in (2, 5):  # numpy's own pickles of plain data still load
        record = np.zeros(2, [("x", "f4"), ("y", "i2")])
        plain = {"a": np.asfortranarray(np.ones((2, 3))), "record": record, "empty": np.zeros((0, 4)), "s": np.int8(3)}
        loaded = DataUnpickler(io.BytesIO(pickle.dumps(plain, protocol=protocol))).load()
        assert loaded["a"].flags.f_contiguous and loaded["record"].dtype == record.dtype
        assert loaded["empty"].shape == (0, 4) and loaded["s"] == 3 and isinstance(loaded["s"], np.int8)


def test_weights_a_network_ties_under_two_names_fit_it_and_shared_ones_it_does_not_tie_do_not(tmp_path) -> None:
    """A (plugin) policy reaching one layer under two names saves one block for both, which loads; a file whose
    two untied tensors share one block would make the network allocate what the file never held."""
    import torch
    from torch import nn

    from asgf_nav.safe_load import weights_mismatch

    def network(tied: bool) -> nn.Module:
        net = nn.Module()
        net.shared = nn.Linear(8, 8)
        net.alias = net.shared if tied else nn.Linear(8, 8)
        return net

    torch.save(network(tied=True).state_dict(), tmp_path / "tied.pt")
    saved = torch.load(tmp_path / "tied.pt", weights_only=True)
    with torch.device("meta"):
        tied, untied = network(tied=True), network(tied=False)
    assert weights_mismatch(tied.state_dict(keep_vars=True), saved) is None
    assert weights_mismatch(untied.state_dict(keep_vars=True), saved) == (
        "its tensors share 288 bytes of data for the network's 576"
    )


class _ForgedDtypeFlags:
    """numpy.dtype('V8') whose BUILD state gives it flags of its own: 0x02 makes numpy unpickle its arrays from a
    list of Python objects, and a one-item list for a 50M shape crashed the interpreter."""

    def __reduce__(self):
        return np.dtype, ("V8", False, True), (3, "|", None, None, None, 8, 1, 0x02)


class _ArrayOfForgedDtype:
    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (50_000_000,), _ForgedDtypeFlags(), False, [None])


def test_a_dtype_given_flags_of_its_own_by_the_file_is_refused(tmp_path: Path) -> None:
    """A dtype's flags are numpy's to derive: DataUnpickler checks each dtype after its BUILD state, and the
    checkpoint reader (whose BUILD cannot be checked) builds no void dtype at all."""
    import io
    import pickle

    import torch

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    data = pickle.dumps({"x": _ArrayOfForgedDtype()}, protocol=2)
    with pytest.raises(
        UnsafePickleError,
        match=r"it gives numpy dtype \|V8 a state numpy does not write \(size 8, alignment 1, flags 0x2\)",
    ):
        DataUnpickler(io.BytesIO(data)).load()
    path = tmp_path / "shared.pt"
    torch.save({"x": _ArrayOfForgedDtype()}, path)
    with pytest.raises(
        UnsafeTorchFileError, match=rf"{path} is not one of this project's: it gives numpy dtype \|V8 a state numpy"
    ):
        load_torch_file(path)
    for dtype in (np.dtype([("x", "f4"), ("y", "i2")], align=True), np.dtype([("a", "f4", (2,))]), np.dtype("U3")):
        loaded = DataUnpickler(io.BytesIO(pickle.dumps(np.zeros(2, dtype), protocol=2))).load()
        assert loaded.dtype == dtype and loaded.dtype.flags == dtype.flags  # numpy's own flags load


@pytest.mark.parametrize(
    ("module", "name"),
    [("builtins", "getattr"), ("builtins", "eval"), ("builtins", "__import__"), ("builtins", "type"),
     ("collections", "namedtuple"), ("numpy.dtypes", "ObjectDType"), ("networkx.classes.graph", "cached_property"),
     ("numpy", "frombuffer"), ("numpy", "empty")],
)  # fmt: skip
def test_a_data_pickle_naming_anything_but_plain_data_is_refused(module: str, name: str) -> None:
    """What a pickle can call it names by module and name; only data types and numpy's own array builders pass
    (each of these would build something of the file's choice: code, a class, an object array, an allocation)."""
    import io

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    call = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."  # GLOBAL, then a call without arguments
    with pytest.raises(UnsafePickleError, match=rf"it names {module}\.{name}, which is not plain data"):
        DataUnpickler(io.BytesIO(call)).load()


def test_sizes_a_pickle_gives_as_numbers_of_any_kind_are_refused() -> None:
    """A shape given as a bare number, and a numpy integer as bytearray's size, are sizes all the same."""
    import io
    import pickle

    from numpy._core.multiarray import _reconstruct

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    class IntShape:
        def __reduce__(self):
            return _reconstruct, (np.ndarray, 50_000_000, b"b")

    class NumpySize:
        def __reduce__(self):
            return bytearray, (np.int64(200_000_000),)

    with pytest.raises(UnsafePickleError, match=r"_reconstruct\(ndarray, 50000000, ...\)"):
        DataUnpickler(io.BytesIO(pickle.dumps(IntShape(), protocol=2))).load()
    with pytest.raises(UnsafePickleError, match=r"it calls bytearray\(200000000\)"):
        DataUnpickler(io.BytesIO(pickle.dumps(NumpySize(), protocol=2))).load()


def test_a_data_pickle_cannot_set_the_state_of_a_class_it_names() -> None:
    """Python's unpickler sets BUILD's slot state with setattr: on a class it names (networkx's Graph), that
    rewrote the class for the whole process, and every later graph of every scene with it."""
    import io
    import pickle

    import networkx as nx

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    set_on_class = (b"\x80\x02cnetworkx.classes.graph\nGraph\n"  # GLOBAL, then BUILD (None, {...}) on it, POP
                    b"N}(X\x0f\x00\x00\x00number_of_nodescbuiltins\nint\nu\x86b0")  # fmt: skip
    graph = nx.Graph()
    graph.add_edge(0, 1)
    with pytest.raises(UnsafePickleError, match=r"it sets the state of Graph itself, not of data built from it"):
        DataUnpickler(io.BytesIO(set_on_class + pickle.dumps(graph, protocol=2)[2:])).load()
    assert nx.path_graph(5).number_of_nodes() == 5
    for protocol in (2, 5):  # graphs, whose views are callable instances, and their attributes still load
        graph.add_node(2, point=np.arange(3.0))
        loaded = DataUnpickler(io.BytesIO(pickle.dumps(graph, protocol=protocol))).load()
        assert list(loaded.edges) == [(0, 1)] and loaded.nodes[2]["point"].tolist() == [0.0, 1.0, 2.0]


def test_structured_dtypes_of_every_layout_keep_numpys_own_flags() -> None:
    """The flags a dtype is checked against are numpy's for its description: fields out of order or overlapping,
    an empty structure and subarrays are numpy's own pickles too."""
    import io
    import pickle

    from asgf_nav.safe_load import DataUnpickler

    layouts = [np.dtype({"names": ["a", "b"], "formats": ["u1", "f8"], "offsets": [8, 0]}), np.dtype([]),
               np.dtype([("x", "u1"), ("y", "f8")], align=True), np.dtype([("p", [("x", "f4")]), ("m", "u1", (2, 2))]),
               np.dtype({"names": ["a", "b"], "formats": ["i4", "i2"], "offsets": [0, 0]})]  # fmt: skip
    for dtype in layouts:
        for protocol in (2, 5):
            loaded = DataUnpickler(io.BytesIO(pickle.dumps({"d": dtype, "a": np.zeros(2, dtype)}, protocol))).load()
            assert loaded["d"] == dtype and loaded["a"].dtype == dtype and loaded["d"].flags == dtype.flags


class _Reduces:
    """Pickles as the call and state it is given."""

    def __init__(self, *reduced) -> None:
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def _torch_file_holding(path: Path, pickled: bytes) -> Path:
    """A torch.save archive whose data.pkl is ``pickled``: what a file made elsewhere may hold."""
    import zipfile

    import torch

    torch.save({}, path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            archive.writestr(info, pickled if info.filename.endswith("/data.pkl") else data)
    return path


# numpy's own dtype __setstate__ takes each of these as it is, on any dtype: a field's dtype given as a string, a
# subarray or field larger than the item, a field beside the names, object flags on a plain type, a datetime
# without its unit; each then crashed the interpreter or read outside the array's bytes
_FORGED_DTYPE_STATES = {
    "a field's dtype as text": ("V8", (3, "|", None, ("a",), {"a": ("<f8", 0)}, 8, 1, 16)),
    "a subarray larger than its item": ("V8", (3, "|", (np.dtype("f8"), (2_000_000,)), None, None, 8, 8, 0)),
    "a subarray on a plain type": ("f8", (3, "<", (np.dtype("f8"), (2_000_000,)), None, None, 8, 8, 0)),
    "a field larger than its item": ("V8", (3, "|", None, ("a",), {"a": (np.dtype("V4000"), 4)}, 8, 1, 16)),
    "a field beside the names": ("V8", (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0), "x": (np.dtype("V4000"), 4)},
                                        8, 1, 16)),
    "object flags on a plain type": ("f8", (3, "<", None, None, None, -1, -1, 0x3F)),
    "a datetime without its unit": ("M8", (3, "<", None, None, None, -1, -1, 0)),
    "a datetime unit of count 0": ("M8", (4, "<", None, None, None, -1, -1, 0, (None, (b"s", 0, 1, 1)))),
    # numpy sums a field's offset and size in a C int: past 2**31 its own check passed
    "a field offset past a C int": ("V8", (3, "|", None, ("x",), {"x": (np.dtype("f8"), 2**31 - 8)}, 8, 1, 16)),
    "a field size past a C int": ("V8", (3, "|", None, ("x",), {"x": (np.dtype("V2147483640"), 8)}, 8, 1, 16)),
}  # fmt: skip


@pytest.mark.parametrize("how", sorted(_FORGED_DTYPE_STATES))
def test_a_dtype_state_numpy_would_not_write_is_refused_by_both_readers(tmp_path: Path, how: str) -> None:
    import io
    import pickle

    import torch
    from numpy._core.multiarray import _reconstruct

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    code, state = _FORGED_DTYPE_STATES[how]
    dtype = _Reduces(np.dtype, (code, False, True), state)
    array = _Reduces(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2,), dtype, False, b"\x01" * 16))
    reason = r"it gives (numpy dtype .* a state numpy does not write|a str where a numpy dtype belongs)"
    with pytest.raises(UnsafePickleError, match=reason):
        DataUnpickler(io.BytesIO(pickle.dumps({"views": array}, protocol=2))).load()
    torch.save({"rng": array}, tmp_path / "shared.pt")
    with pytest.raises(UnsafeTorchFileError, match=reason):
        load_torch_file(tmp_path / "shared.pt")


def test_a_dtype_made_already_cannot_be_given_another_state() -> None:
    """The memo hands a file its own dtypes back: state set on one after a struct was made on it changed the
    struct's field under it (an 8-byte item read as 4000)."""
    import io
    import pickle

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    made = pickle.dumps([np.dtype("V8"), 0], protocol=2)  # the dtype is memo entry 4 (after the class, its args)
    again = pickle.dumps((3, "|", None, None, None, 4000, 1, 0), protocol=2)[2:-1]
    rebuilt = made[:-1] + b"0h\x04" + again + b"b."  # POP the list, GET the dtype, BUILD it again
    with pytest.raises(UnsafePickleError, match=r"it sets the state of a numpy VoidDType made before"):
        DataUnpickler(io.BytesIO(rebuilt)).load()


def test_a_checkpoints_empty_numpy_arrays_load_and_a_bytes_size_is_refused(tmp_path: Path) -> None:
    """Numpy writes an empty array's data as a call of bytes(), which torch's reader refused: a checkpoint holding
    one (a plugin's state of length 0) was 'not one of this project's'. bytes(n) stays refused."""
    import torch

    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    torch.save({"empty": np.zeros((0, 3)), "none": np.zeros(0, np.uint32)}, tmp_path / "run.pt")
    loaded = load_torch_file(tmp_path / "run.pt")
    assert loaded["empty"].shape == (0, 3) and loaded["none"].dtype == np.uint32
    torch.save({"b": _Reduces(bytes, (10**9,))}, tmp_path / "shared.pt")
    with pytest.raises(UnsafeTorchFileError, match=r"it calls bytes\(1000000000\), which makes that many zero bytes"):
        load_torch_file(tmp_path / "shared.pt")


def test_numpy_objects_read_from_a_file_are_never_left_as_stand_ins(tmp_path: Path) -> None:
    """Torch's reader holds a dtype or array as a stand-in until its state comes: one used as a dict key or set
    member stayed one (a lookup by the real dtype found nothing), and an array whose state never came is refused.
    DataUnpickler makes a plain dtype or an empty array first, so nothing it returns is a stand-in."""
    import io
    import pickle

    import torch
    from numpy._core.multiarray import _reconstruct

    from asgf_nav.safe_load import DataUnpickler, UnsafeTorchFileError, load_torch_file

    torch.save({"by_dtype": {np.dtype("f4"): 1}, "kinds": {np.dtype("i8")}, "pairs": [(np.dtype("f4"), 2)]},
               tmp_path / "keys.pt")  # fmt: skip
    loaded = load_torch_file(tmp_path / "keys.pt")
    assert loaded["by_dtype"][np.dtype("f4")] == 1 and loaded["kinds"] == {np.dtype("i8")}
    assert loaded["pairs"] == [(np.dtype("f4"), 2)] and type(loaded["pairs"][0][0]) is type(np.dtype("f4"))
    unbuilt = _Reduces(_reconstruct, (np.ndarray, (0,), b"b"))  # an array that never gets its data
    torch.save({"x": unbuilt}, tmp_path / "unbuilt.pt")
    with pytest.raises(UnsafeTorchFileError, match=r"it holds a numpy array without its data"):
        load_torch_file(tmp_path / "unbuilt.pt")
    loaded = DataUnpickler(io.BytesIO(pickle.dumps({"point": unbuilt}, protocol=2))).load()
    assert type(loaded["point"]) is np.ndarray and loaded["point"].size == 0


def test_an_array_of_more_empty_items_than_a_file_may_ask_for_is_refused() -> None:
    """Items of size 0 need no bytes: a few bytes could describe 2**60 of them, which a caller's copy allocates."""
    import io
    import pickle

    from numpy._core.multiarray import _reconstruct

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    empty = (3, "|", None, (), {}, 0, 1, 16)
    huge = _Reduces(_reconstruct, (np.ndarray, (0,), b"b"),
                    (1, (2**60,), _Reduces(np.dtype, ("V0", False, True), empty), False, b""))  # fmt: skip
    with pytest.raises(UnsafePickleError, match=r"of shape \(1152921504606846976,\) and dtype \[\] other than its"):
        DataUnpickler(io.BytesIO(pickle.dumps(huge, protocol=2))).load()
    few = DataUnpickler(io.BytesIO(pickle.dumps(np.zeros(5, np.dtype([])), protocol=2))).load()
    assert few.shape == (5,) and few.dtype == np.dtype([])


@pytest.mark.parametrize(
    "spec",
    ["V2147483647,V2147483647,V10", {"names": ["a"], "formats": ["f8"], "offsets": [2**31 - 8], "itemsize": 8}],
    ids=["comma string", "offsets"],
)
def test_a_dtype_whose_fields_lie_beyond_its_item_is_refused_whatever_makes_it(tmp_path: Path, spec) -> None:
    """np.dtype itself accepts these (offsets summed in a C int): named in a pickle's arguments rather than its
    state, they made 8-byte items whose fields were read and written gigabytes away."""
    import io
    import pickle

    import torch
    from numpy._core.multiarray import _reconstruct

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    dtype = np.dtype(spec)
    assert dtype.itemsize in (8, 16)  # what numpy makes of it
    array = _Reduces(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), _Reduces(np.dtype, (spec,)), False, b"\0" * 8))
    reason = r"it gives a numpy dtype field '\w+' of \d+ bytes at offset \d+"
    if isinstance(spec, dict):  # numpy's pickles name a type: a spec of fields is refused as such
        reason = r"it calls numpy.dtype on a dict, where numpy's pickles name a type \('f8'\)"
    with pytest.raises(UnsafePickleError, match=reason):
        DataUnpickler(io.BytesIO(pickle.dumps(array, protocol=2))).load()
    torch.save({"x": array}, tmp_path / "shared.pt")
    with pytest.raises(UnsafeTorchFileError, match=reason):
        load_torch_file(tmp_path / "shared.pt")


def test_a_few_bytes_cannot_grow_into_gigabytes_through_a_codec_or_a_repr(tmp_path: Path) -> None:
    """_codecs.encode with 'hex' doubles its input and str() of a list of itself doubles its text: chained through
    the memo, a few hundred bytes of file made gigabytes. Pickles turn text into bytes with latin1 only and never
    call str on a container; torch's reader, whose allow-list names _codecs.encode, gets the same check."""
    import _codecs
    import io
    import pickle

    import torch
    import torch._weights_only_unpickler as reader

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    hexed = _Reduces(_codecs.encode, (_Reduces(_codecs.encode, ("ab", "latin1")), "hex"))
    with pytest.raises(UnsafePickleError, match=r"it calls _codecs.encode with bytes and 'hex'"):
        DataUnpickler(io.BytesIO(pickle.dumps(hexed, protocol=2))).load()
    torch.save({"x": hexed}, tmp_path / "shared.pt")
    with pytest.raises(UnsafeTorchFileError, match=r"it calls _codecs.encode with bytes and 'hex'"):
        load_torch_file(tmp_path / "shared.pt")
    assert reader.encode is _codecs.encode  # torch's own function is back after the read
    with pytest.raises(UnsafePickleError, match=r"it calls str on a list"):
        DataUnpickler(io.BytesIO(pickle.dumps(_Reduces(str, ([1, 2],)), protocol=2))).load()
    for protocol in (0, 1, 2):  # bytes in pickles of these protocols still come from latin1 text
        assert DataUnpickler(io.BytesIO(pickle.dumps({"b": b"\xff\x00"}, protocol=protocol))).load() == {
            "b": b"\xff\x00"
        }


def test_torch_reads_no_size_or_codec_from_a_file_even_after_other_loads(tmp_path: Path) -> None:
    """torch keeps its allow-list cached from the first weights-only load of the process, and its entries for
    _codecs.encode and bytearray take any codec and any size: they are swapped for checked ones during each read
    (and back after), whichever load came first. A tensor expanded from a few bytes is refused before anything
    copies it (a digest made gigabytes of one stored float)."""
    import _codecs

    import torch
    import torch._weights_only_unpickler as reader

    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    torch.save({"ok": torch.zeros(2)}, tmp_path / "ok.pt")
    torch.load(tmp_path / "ok.pt", weights_only=True)  # torch's allow-list is cached from here on
    hexed = _Reduces(_codecs.encode, (_Reduces(_codecs.encode, ("ab", "latin1")), "hex"))
    crafted = [("hex", hexed, r"_codecs.encode with bytes and 'hex'"),
               ("sized", _Reduces(bytearray, (10**9,)), r"it calls bytearray\(1000000000\)"),
               ("expanded", torch.zeros(1).expand(2**20), r"a tensor of shape \(1048576,\)")]  # fmt: skip
    for name, value, reason in crafted:
        torch.save({"x": value}, tmp_path / f"{name}.pt")
        with pytest.raises(UnsafeTorchFileError, match=reason):
            load_torch_file(tmp_path / f"{name}.pt")
    allowed = reader._get_allowed_globals()
    assert allowed["_codecs.encode"] is _codecs.encode and allowed["builtins.bytearray"] is bytearray  # torch's own


def test_text_and_methods_of_the_reader_stay_out_of_a_pickles_reach() -> None:
    """str of bytes doubles its backslashes, which latin1 turns back into bytes: chained, 540 bytes of pickle made
    270 MB. And BUILD on the reader's own numpy.dtype method set attributes on it for the process."""
    import _codecs
    import io
    import pickle

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    with pytest.raises(UnsafePickleError, match=r"it calls str on a bytes"):
        DataUnpickler(
            io.BytesIO(pickle.dumps(_Reduces(str, (_Reduces(_codecs.encode, ("\\\\", "latin1")),)), 2))
        ).load()
    on_method = b"\x80\x02cnumpy\ndtype\n}X\x0b\x00\x00\x00__wrapped__X\x03\x00\x00\x00pwnsb."
    with pytest.raises(UnsafePickleError, match=r"it sets the state of DataUnpickler._dtype itself"):
        DataUnpickler(io.BytesIO(on_method)).load()


_COPIERS = {kind.__name__: kind for kind in (list, tuple, set, frozenset, dict, bytearray)}
_COPIERS.update({"OrderedDict": __import__("collections").OrderedDict, "deque": __import__("collections").deque})


@pytest.mark.parametrize("copier", sorted(_COPIERS))
def test_a_container_copied_again_and_again_through_the_memo_is_refused_before_the_copies(copier: str) -> None:
    """A pickle names a container once and calls a copier on its memo reference for a few bytes a time: 160 kB of
    file made 3.2 GB. What calls and BUILDs copy is bounded by the bytes read; copied once, the container loads."""
    import io
    import pickle
    import tracemalloc

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    kind = _COPIERS[copier]
    big = bytes(50_000) if kind is bytearray else list(range(50_000))
    if copier in ("dict", "OrderedDict"):
        big = dict.fromkeys(big)
    args = (big,)  # one tuple: the file holds it once and refers to it from every call
    data = pickle.dumps([_Reduces(kind, args) for _ in range(2_000)], protocol=2)
    assert len(data) < 250_000  # what it asks for: 100 million items
    tracemalloc.start()
    try:
        refused = r"it copies \d+ items having read \d+ bytes, past the \d+ a file of that size may copy; it was not"
        with pytest.raises(UnsafePickleError, match=refused):
            DataUnpickler(io.BytesIO(data)).load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80e6, f"{peak / 1e6:.0f} MB"  # copying 100 million items would take gigabytes
    once = DataUnpickler(io.BytesIO(pickle.dumps([_Reduces(kind, args), _Reduces(kind, args)], protocol=2))).load()
    assert once == [kind(big), kind(big)]


def test_a_networkx_graph_is_never_made_from_data_a_pickle_can_share() -> None:
    """Graph(data) copies every edge of a dict of dicts whose inner dicts a pickle refers to for two bytes each (as
    does copyreg._reconstructor with a Graph as its base); graphs pickled by any protocol load as before."""
    import copyreg
    import io
    import pickle

    import networkx as nx

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError

    inner = dict.fromkeys(range(1_000), {})
    with pytest.raises(UnsafePickleError, match=r"it makes a networkx Graph from data"):
        DataUnpickler(io.BytesIO(pickle.dumps(_Reduces(nx.Graph, (dict.fromkeys(range(100), inner),)), 2))).load()
    via_base = _Reduces(copyreg._reconstructor, (nx.Graph, nx.Graph, {0: inner}))
    with pytest.raises(UnsafePickleError, match=r"it makes a Graph by calling <class 'networkx.classes.graph.Graph'>"):
        DataUnpickler(io.BytesIO(pickle.dumps(via_base, 2))).load()
    graph = nx.path_graph(5, create_using=nx.DiGraph)
    graph.nodes[2]["point"] = (1.0, 2.0)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = DataUnpickler(io.BytesIO(pickle.dumps(graph, protocol))).load()
        assert nx.utils.graphs_equal(loaded, graph) and loaded.nodes[2]["point"] == (1.0, 2.0)
    as_dict = DataUnpickler(io.BytesIO(pickle.dumps(_Reduces(copyreg._reconstructor, (dict, dict, {1: 2})), 0))).load()
    assert as_dict == {1: 2}
    pairs = _Reduces(copyreg._reconstructor, (dict, dict, [[1, 2]]))  # dict.__init__ on pairs no count has seen
    with pytest.raises(UnsafePickleError, match=r"it makes a dict from a list where copyreg gives a dict"):
        DataUnpickler(io.BytesIO(pickle.dumps(pairs, 0))).load()


def test_a_torch_file_copying_a_container_again_and_again_is_refused_before_torch_reads_it(tmp_path: Path) -> None:
    """torch's reader calls set and OrderedDict and BUILDs an OrderedDict's attributes from any state, as often as a
    file asks: 100 kB made 3.9 GB. A pre-read of the file's pickle counts the copies first; a checkpoint holding large
    containers once loads."""
    import collections
    import tracemalloc

    import torch

    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    state = dict.fromkeys(range(30_000))
    items = (list(range(30_000)),)
    crafted = {"od_state": [_Reduces(collections.OrderedDict, (), state) for _ in range(2_000)],
               "set": [_Reduces(set, items) for _ in range(2_000)]}  # fmt: skip
    for name, value in crafted.items():
        torch.save(value, tmp_path / f"{name}.pt")
        torch.save(value, tmp_path / f"{name}_legacy.pt", _use_new_zipfile_serialization=False)
        assert (tmp_path / f"{name}.pt").stat().st_size < 400_000
        tracemalloc.start()
        try:
            with pytest.raises(UnsafeTorchFileError, match=rf"{name}.pt is not one of this project's: it copies \d+"):
                load_torch_file(tmp_path / f"{name}.pt")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 60e6, f"{name}: {peak / 1e6:.0f} MB"
        with pytest.raises(UnsafeTorchFileError, match=rf"{name}_legacy.pt is not one of this project's: it copies"):
            load_torch_file(tmp_path / f"{name}_legacy.pt")  # torch's format before 1.6: a few pickles in a row
    large = {"set": set(range(300_000)), "od": collections.OrderedDict.fromkeys(range(300_000)), "w": torch.ones(3)}
    torch.save(large, tmp_path / "large.pt")
    loaded = load_torch_file(tmp_path / "large.pt")
    assert loaded["set"] == large["set"] and loaded["od"] == large["od"] and torch.equal(loaded["w"], large["w"])


def test_every_pickle_torch_could_read_from_an_archive_is_counted(tmp_path: Path) -> None:
    """Torch reads data.pkl from the folder of the archive's first entry, and of two entries of one name it and
    Python's zipfile need not pick the same: each data.pkl of the archive is counted, wherever it lies."""
    import copy
    import warnings
    import zipfile

    import torch

    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    items = (list(range(30_000)),)
    torch.save([_Reduces(set, items) for _ in range(2_000)], tmp_path / "copies.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "benign.pt")
    with zipfile.ZipFile(tmp_path / "copies.pt") as archive:
        copying = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    with zipfile.ZipFile(tmp_path / "benign.pt") as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    pickle_name = next(info.filename for info, _ in entries if info.filename.endswith("/data.pkl"))
    variants = {"duplicate_before": [copying, None], "duplicate_after": [None, copying], "other_folder": [None]}
    for variant, pickles in variants.items():  # None: the benign checkpoint's own pickle
        with warnings.catch_warnings(), zipfile.ZipFile(tmp_path / f"{variant}.pt", "w") as archive:
            warnings.simplefilter("ignore")  # zipfile warns of a duplicate name
            for info, data in entries:
                for each in pickles if info.filename == pickle_name else [data]:
                    archive.writestr(copy.copy(info), data if each is None else each)  # it sets info's offset
            if variant == "other_folder":
                archive.writestr("elsewhere/data.pkl", copying)
        with pytest.raises(UnsafeTorchFileError, match=rf"{variant}.pt is not one of this project's: it copies"):
            load_torch_file(tmp_path / f"{variant}.pt")
    assert torch.equal(load_torch_file(tmp_path / "benign.pt")["w"], torch.ones(2))


def test_rows_of_no_bytes_and_tuples_shared_through_the_memo_are_counted_in_both_readers(tmp_path: Path) -> None:
    """A list of an array of shape (n, 0) makes n row objects from no data (246 bytes made 1.2 GB); a dict key
    built as (t, t) of (t', t') ..., each level a few bytes of memo references, hashes in 2**depth steps (40
    levels: hours). Both are refused as they are made, by the data reader and before torch reads a file."""
    import io
    import pickle
    import struct
    import time

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    rows = pickle.dumps(_Reduces(list, (np.empty((10**7, 0)),)), protocol=2)
    with pytest.raises(UnsafePickleError, match=r"it copies 100000\d\d items having read \d+ bytes"):
        DataUnpickler(io.BytesIO(rows)).load()
    shared = bytearray(b"\x80\x02)r" + struct.pack("<I", 0))
    for level in range(1, 41):  # LONG_BINGET the level below twice, TUPLE2, LONG_BINPUT
        below = b"j" + struct.pack("<I", level - 1)
        shared += below + below + b"\x86r" + struct.pack("<I", level)
    shared += b"}j" + struct.pack("<I", 40) + b"Ns."  # {the top tuple: None}
    _torch_file_holding(tmp_path / "shared.pt", bytes(shared))
    started = time.perf_counter()
    with pytest.raises(UnsafePickleError, match=r"it makes a tuple whose hash visits \d+ items"):
        DataUnpickler(io.BytesIO(bytes(shared))).load()
    with pytest.raises(UnsafeTorchFileError, match=r"shared.pt is not one of this project's: it makes a tuple"):
        load_torch_file(tmp_path / "shared.pt")
    assert time.perf_counter() - started < 5
    keys = {(1, (2, 3)): 4, ((1, 2),) * 3: 5, (): 6}  # tuples as keys and shared, as data holds them
    assert DataUnpickler(io.BytesIO(pickle.dumps(keys, protocol=2))).load() == keys


def test_a_deflated_pickle_is_allowed_the_copies_of_its_stored_size(tmp_path: Path) -> None:
    """torch reads deflated archive entries too: a data.pkl unpacked a thousand to one would earn a budget a
    thousand times its file's. What it may copy grows with the bytes it takes in the archive; stored (as torch
    writes it) the same pickle loads."""
    import zipfile

    import torch

    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    items = ([0] * 30_000,)  # 60 kB of pickle, a few hundred bytes deflated
    torch.save([_Reduces(set, items) for _ in range(6)], tmp_path / "stored.pt")  # 180,000 items copied
    assert load_torch_file(tmp_path / "stored.pt") == [{0}] * 6
    with zipfile.ZipFile(tmp_path / "stored.pt") as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(tmp_path / "deflated.pt", "w") as archive:
        for info, data in entries:
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    assert torch.load(tmp_path / "deflated.pt", weights_only=True) == [{0}] * 6  # torch itself reads it
    with pytest.raises(UnsafeTorchFileError, match=r"deflated.pt is not one of this project.s: it copies \d+ items"):
        load_torch_file(tmp_path / "deflated.pt")
    with zipfile.ZipFile(tmp_path / "unpacked.pt", "w") as archive:  # 8 MB of list from 8 kB
        for info, data in entries:
            pickled = b"\x80\x02](" + b"N" * 2**23 + b"e." if info.filename.endswith("data.pkl") else data
            archive.writestr(info, pickled)
    with pytest.raises(UnsafeTorchFileError, match=r"its entry \w+/data.pkl unpacks to 8388614 bytes from \d+"):
        load_torch_file(tmp_path / "unpacked.pt")


def test_what_a_file_asks_to_hash_or_multiply_is_bounded_in_both_readers(tmp_path: Path) -> None:
    """A dict key of tuples nested 200,000 deep crashed the interpreter (CPython hashes a tuple in C, a call per
    level); one costly tuple as the key of thousands of entries was hashed for each; np.dtype read a spec of
    fields shared through the memo again for each reference (2**depth); sizes of thousands of digits repeated in a
    shape took minutes to multiply. Each is refused at once, by the data reader and before torch reads a file."""
    import io
    import pickle
    import struct
    import time

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    def get(index: int) -> bytes:
        return b"j" + struct.pack("<I", index)

    def put(index: int) -> bytes:
        return b"r" + struct.pack("<I", index)

    deep = b"\x80\x02}K\x00" + b"\x85" * 200_000 + b"Ns."  # {((((0,),),)...): None}
    costly = bytearray(b"\x80\x02)" + put(0))  # a tuple whose hash visits 2**14 items, then 40,000 keys of it
    for level in range(1, 15):
        costly += get(level - 1) + get(level - 1) + b"\x86" + put(level)
    costly += b"}(" + (get(14) + b"N") * 40_000 + b"u."
    spec = "u1"
    for _ in range(24):
        spec = [("a", spec), ("b", spec)]
    fields = pickle.dumps(_Reduces(np.dtype, (spec,)), protocol=2)
    huge = 2**1000  # a shape of 2,000 such sizes, each a memo reference

    def latin1(text: bytes) -> bytes:  # bytes as protocol 2 writes them, which torch's reader takes
        return b"c_codecs\nencode\nX" + struct.pack("<I", len(text)) + text + b"X\x06\x00\x00\x00latin1\x86R"

    sizes = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + latin1(b"b") + b"\x87R(K\x01"
    number = huge.to_bytes(127, "little", signed=True)
    sizes += b"(\x8a\x7f" + number + put(1) + get(1) * 1999 + b"t"
    sizes += b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R\x89" + latin1(b"") + b"tb."  # u1, not Fortran, no data
    long_int = b"\x80\x02\x8a\xff" + (2**2000).to_bytes(255, "little", signed=True) + b"."  # LONG1, as torch reads
    cases = {"deep": (deep, "it nests tuples 101 deep, past 100"), "costly": (bytes(costly), "it copies"),
             "fields": (fields, "it calls numpy.dtype on a list"),
             "sizes": (sizes, "it gives numpy array shape a tuple, not a tuple of sizes"),
             "long": (long_int, "it gives an int of 2001 bits, past 1024")}  # fmt: skip
    for name, (data, reason) in cases.items():
        started = time.perf_counter()
        with pytest.raises(UnsafePickleError, match=reason):
            DataUnpickler(io.BytesIO(data)).load()
        with pytest.raises(UnsafeTorchFileError, match=rf"{name}.pt is not one of this project's: {reason}"):
            load_torch_file(_torch_file_holding(tmp_path / f"{name}.pt", data))
        assert time.perf_counter() - started < 5, name


def test_keys_chosen_to_share_a_hash_and_tensors_of_other_layouts_are_refused(tmp_path: Path) -> None:
    """An int's hash is its value modulo 2**61 - 1: 80,000 keys k * (2**61 - 1), 13 bytes each, all hash to 0 and
    took 42 s to add; complex numbers collide as readily. Past 64 distinct keys of one hash a file is refused, in
    both readers; keys that merely are large load. A sparse tensor (whose storage cannot be measured) is refused
    by name rather than raising NotImplementedError."""
    import io
    import pickle
    import time

    import torch

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    modulus = 2**61 - 1
    crafted = {"ints": {k * modulus: None for k in range(1, 20_000)},
               "complex": {complex(10**12 - 1_000_003 * k, k): None for k in range(200)}}  # fmt: skip
    for name, keys in crafted.items():
        assert len({hash(k) for k in keys}) == 1  # every key of one hash
        data = pickle.dumps(keys, protocol=2)
        started = time.perf_counter()
        with pytest.raises(UnsafePickleError, match=r"it gives more than 64 distinct keys of one hash"):
            DataUnpickler(io.BytesIO(data)).load()
        with pytest.raises(UnsafeTorchFileError, match=rf"{name}.pt is not one of this project's: it gives more than"):
            load_torch_file(_torch_file_holding(tmp_path / f"{name}.pt", data))
        assert time.perf_counter() - started < 5, name
    # keys reaching a dict or set however the file passes them: lists of pairs, a deque, an array of them
    import collections

    chosen = [k * modulus for k in range(1, 5_000)]
    row = np.arange(5_000, dtype=np.float64)
    routes = {"pairs as lists": _Reduces(dict, ([[k, None] for k in chosen],)),
              "ordered pairs": _Reduces(collections.OrderedDict, ([[k, None] for k in chosen],)),
              "a deque": _Reduces(set, (collections.deque(chosen),)),
              "an array": _Reduces(set, ((2.0**52 - 1_000_003 * row) + 1j * row,))}  # fmt: skip
    for route, value in routes.items():
        data = pickle.dumps(value, protocol=4)
        with pytest.raises(UnsafePickleError, match=r"more than 64 distinct keys of one hash"):
            DataUnpickler(io.BytesIO(data)).load()
            pytest.fail(f"keys passed as {route} were not counted")
    torch.save({"w": torch.zeros(2), "x": routes["ordered pairs"]}, tmp_path / "ordered.pt")
    with pytest.raises(UnsafeTorchFileError, match=r"ordered.pt is not one of this project's: it gives more than 64"):
        load_torch_file(tmp_path / "ordered.pt")
    large = {2**127 + 7 * k: k for k in range(5_000)}  # 128-bit keys, as a generator's state holds
    assert DataUnpickler(io.BytesIO(pickle.dumps(large, protocol=2))).load() == large
    torch.save({"s": torch.eye(3).to_sparse()}, tmp_path / "sparse.pt")
    with pytest.raises(
        UnsafeTorchFileError, match=r"sparse.pt is not one of this project's: it holds a tensor of layout"
    ):
        load_torch_file(tmp_path / "sparse.pt")


def test_dark_views_pickled_at_protocol_2_load_with_room_to_spare() -> None:
    """Protocol 2 stores an array's bytes as text, which becomes bytes and then the array: two copies of each byte,
    and a byte under 128 takes one of the file: views of a dark room (all zeros) load."""
    import io
    import pickle

    from asgf_nav.safe_load import DataUnpickler

    views = {(node, yaw): {"rgb": np.zeros((128, 128, 3), np.uint8), "depth": np.zeros((128, 128), np.float32)}
             for node in range(20) for yaw in (0, 90, 180, 270)}  # fmt: skip
    loaded = DataUnpickler(io.BytesIO(pickle.dumps(views, protocol=2))).load()
    assert loaded.keys() == views.keys() and not loaded[(19, 270)]["rgb"].any()


def test_numpy_1s_dtype_flags_load_and_an_ordered_copy_of_costly_keys_is_counted(tmp_path: Path) -> None:
    """numpy 1 pickled a dtype as np.dtype(name, 0, 1), where numpy 2 writes False, True: both load, in both readers.
    OrderedDict(d) hashes every key of d again (a plain dict reuses its stored hashes): a key whose hash visits
    65,534 items, copied by 10 bytes of file 40,000 times, took 9 s."""
    import collections
    import io
    import pickle

    import torch

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, load_torch_file

    written = pickle.dumps({"depth": np.zeros((2, 2), np.float32)}, protocol=2)
    numpy_1 = written.replace(b"\x89\x88", b"K\x00K\x01")  # NEWFALSE NEWTRUE as BININT1 0, BININT1 1
    assert numpy_1 != written
    assert not DataUnpickler(io.BytesIO(numpy_1)).load()["depth"].any()
    torch.save({"rng": np.random.RandomState(0).get_state()}, tmp_path / "rng.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "rng.pt").write_bytes((tmp_path / "rng.pt").read_bytes().replace(b"\x89\x88", b"K\x00K\x01"))
    assert load_torch_file(tmp_path / "rng.pt")["rng"][1].shape == (624,)

    costly = (1, 2)
    for _ in range(14):
        costly = (costly, costly)
    keyed = {costly: 0}
    copies = pickle.dumps([keyed] + [_Reduces(collections.OrderedDict, (keyed,)) for _ in range(40_000)], protocol=2)
    with pytest.raises(UnsafePickleError, match=r"it copies \d+ items having read \d+ bytes"):
        DataUnpickler(io.BytesIO(copies)).load()
    small = {(1, (2, 3)): 0}
    plain = pickle.dumps([small] + [_Reduces(dict, (small,)) for _ in range(1_000)], protocol=2)
    assert len(DataUnpickler(io.BytesIO(plain)).load()) == 1_001  # copies of a plain dict load


def test_attribute_keys_data_views_and_numpy_scalar_keys_are_counted_or_refused(tmp_path: Path) -> None:
    """Three routes around the counts: a BUILD sets each attribute name again, so a state whose key is a costly
    tuple, given to thousands of objects through the memo, hashed it each time (375 kB: 17 s); a networkx data view's
    __setstate__ runs its __init__ on the file's graph and nodes (a graph whose _adj is a list scanned once per
    node: 160 kB, 9.5 s); numpy scalars of chosen hashes as keys, which the torch pre-read did not make (1.3 MB:
    6.6 s). The views a graph keeps of itself still load."""
    import collections
    import io
    import pickle

    import networkx as nx
    import torch
    from networkx.classes.reportviews import OutEdgeDataView, OutEdgeView

    from asgf_nav.safe_load import DataUnpickler, UnsafePickleError, UnsafeTorchFileError, load_torch_file

    costly = (1, 2)
    for _ in range(14):
        costly = (costly, costly)
    attributes = {costly: 0}
    built = pickle.dumps([attributes] + [_Reduces(collections.OrderedDict, (), attributes) for _ in range(3_000)], 4)
    with pytest.raises(UnsafePickleError, match=r"it copies \d+ items having read \d+ bytes"):
        DataUnpickler(io.BytesIO(built)).load()

    graph = nx.Graph()
    graph.__dict__.clear()
    graph._adj, graph._node = [0] * 100, {}
    edges = OutEdgeView.__new__(OutEdgeView)
    edges._graph, edges._adjdict = graph, {}
    view = OutEdgeDataView.__new__(OutEdgeDataView)
    view._viewer, view._nbunch, view._data, view._default = edges, [1] * 100, False, None
    with pytest.raises(UnsafePickleError, match=r"it names networkx.classes.reportviews.OutEdgeDataView"):
        DataUnpickler(io.BytesIO(pickle.dumps(view, protocol=4))).load()
    kept = nx.path_graph(4, create_using=nx.MultiDiGraph)
    for name in ("nodes", "edges", "adj", "degree", "succ", "pred", "in_edges", "out_edges", "in_degree"):
        getattr(kept, name)  # networkx keeps each view in the graph's __dict__, and pickles it with the graph
    assert nx.utils.graphs_equal(DataUnpickler(io.BytesIO(pickle.dumps(kept, protocol=4))).load(), kept)

    scalar = np.complex128  # complex(-1000003 * k, k) all hash to 0, as numpy scalars too
    keys = {scalar(complex(-1_000_003 * k, k)): 0 for k in range(1, 2_000)}
    assert len({hash(key) for key in keys}) == 1
    torch.save(keys, tmp_path / "scalars.pt")
    with pytest.raises(UnsafeTorchFileError, match=r"scalars.pt is not one of this project's: it gives more than 64"):
        load_torch_file(tmp_path / "scalars.pt")
    with pytest.raises(UnsafePickleError, match=r"it gives more than 64 distinct keys of one hash"):
        DataUnpickler(io.BytesIO(pickle.dumps(keys, protocol=2))).load()


def test_a_checkpoint_of_lists_shared_again_and_again_is_refused_before_its_digest(tmp_path: Path) -> None:
    """A digest walks a list once for every reference to it: 40 levels of [x, x], 1.7 kB of checkpoint, would have
    taken years (2**40 visits). It is refused at once, by the training and the DoA checkpoint readers."""
    import time

    import torch

    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, read_checkpoint
    from asgf_nav.rl.checkpoint import CheckpointError, load_checkpoint
    from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file

    shared: list = [0, 0]
    for _ in range(40):
        shared = [shared, shared]
    torch.save({"model": {}, "optimizer": {"state": shared}, "update": 1, "frames": 1, "rng": {}, "config": {},
                "state_digests": {}}, tmp_path / "ppo.pt")  # fmt: skip
    torch.save({"kind": shared, "state_dict": {}, "entry_digests": {}}, tmp_path / "doa.pt")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"ppo.pt is not one of this project's: its \d+ containers are reached"):
        load_checkpoint(tmp_path / "ppo.pt")
    with pytest.raises(DoaCheckpointError, match=r"doa.pt is not one of this project's: its \d+ containers are reac"):
        read_checkpoint(tmp_path / "doa.pt")
    torch.save({"anything": shared}, tmp_path / "walked.pt")  # whatever walks it next: a config parser, a repr
    with pytest.raises(UnsafeTorchFileError, match=r"walked.pt is not one of this project.s: its 42 containers"):
        load_torch_file(tmp_path / "walked.pt")
    assert time.perf_counter() - started < 5
