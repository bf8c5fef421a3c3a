"""SoundSpaces 1.0 data (Replica / Matterport3D): the file layout, its readers, lazy RIRs and sounds.

The SoundSpaces layout under a root (see docs/data.md)::

    metadata/{dataset}/{scene}/points.txt, graph.pkl          navigation graph (node id = points.txt row)
    binaural_rirs/{dataset}/{scene}/{azimuth}/{recv}_{src}.wav float32 stereo, azimuth = (-yaw) % 360
    scene_observations/{dataset}/{scene}.pkl                  {(node, yaw): {'rgb', 'depth'}}, optional
    datasets/audionav/{dataset}/v1/{split}_{telephone|multiple}[_unheard]/...json.gz
    sounds/1s_all/{sound}.wav

Graph and views are small and are converted once into the scene store (``{data_root}/scenes/
soundspaces_{dataset}/{scene}``, re-imported when their source files change) by
:mod:`asgf_nav.scenes.soundspaces_import`. The binaural RIRs (81 GB for Replica, 682 GB for
Matterport3D) are never converted: :class:`SoundSpacesRirs` reads each wav file on demand through a
bounded LRU cache. Unlike SoundSpaces, a missing, empty or unreadable RIR
is an error naming the file; ``on_missing="silence"`` substitutes one second of silence instead, with a
warning (for a scene's 1st, 10th, 100th, ... such file; the others at DEBUG), and the substitutions are
counted and summarised at exit (:func:`silence_fallback_summary`).
Each :class:`SoundSpacesRirs` also keeps the files it replaced (``silenced``, read through
:func:`silenced_rir_files`), so that an evaluation counts those of its own world: the process-wide count
of the exit summary mixes the sound splits one process evaluates in turn. The files a spectrogram store file
was baked with as silence are added when it is opened (:meth:`SoundSpacesRirs.count_silenced`): its
spectrograms of them are silent, though no RIR is read.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from scipy.io import wavfile
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from asgf_nav.errors import UserInputError
from asgf_nav.io import is_plain_file_name
from asgf_nav.logging_utils import decade_count
from asgf_nav.safe_load import DataUnpickler, UnsafePickleError
from asgf_nav.scenes.scene import YAWS

logger = logging.getLogger(__name__)

SOURCE_NODES_FILE = "source_nodes.txt"  # optional, written by the exporter; SoundSpaces ignores it
SOUNDS_SUBDIR = Path("sounds") / "1s_all"


class SoundSpacesDataError(UserInputError, RuntimeError):
    """A SoundSpaces file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class DatasetSpec:
    """Constants SoundSpaces hard-codes per dataset."""

    sample_rate: int  # Hz of the binaural RIRs (sounds are resampled to it)
    height_offset: float  # points.txt z (up) minus this = habitat y
    grid_size: float  # metres between graph nodes (geodesic distance = hops x grid size)


DATASETS: dict[str, DatasetSpec] = {
    "replica": DatasetSpec(sample_rate=44100, height_offset=1.5528907, grid_size=0.5),
    "mp3d": DatasetSpec(sample_rate=16000, height_offset=1.5, grid_size=1.0),
}


def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise SoundSpacesDataError(f"SoundSpaces has no dataset {dataset!r}; known: {sorted(DATASETS)}") from None


def azimuth_for_yaw(yaw_index: int) -> int:
    """RIR folder of a yaw index: SoundSpaces' azimuth = (-yaw) % 360 (yaw 90 -> folder 270)."""
    return (-YAWS[yaw_index % 4]) % 360


def mesh_to_habitat(columns: np.ndarray, dataset: str) -> np.ndarray:
    """points.txt columns 1..3 (mesh x, y, z with Z up) -> habitat (x, y, z) with Y up and -Z forward."""
    c = np.asarray(columns, dtype=np.float64).reshape(-1, 3)
    return np.stack([c[:, 0], c[:, 2] - dataset_spec(dataset).height_offset, -c[:, 1]], axis=1)


def habitat_to_mesh(points: np.ndarray, dataset: str) -> np.ndarray:
    """Inverse of :func:`mesh_to_habitat`."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return np.stack([p[:, 0], -p[:, 2], p[:, 1] + dataset_spec(dataset).height_offset], axis=1)


# ------------------------------------------------------------------------------------------ paths
@dataclass(frozen=True)
class SoundSpacesPaths:
    """Where SoundSpaces keeps each file of one dataset under ``root``."""

    root: Path
    dataset: str

    def metadata_dir(self, scene: str) -> Path:
        return self.root / "metadata" / self.dataset / scene

    def points_file(self, scene: str) -> Path:
        return self.metadata_dir(scene) / "points.txt"

    def graph_file(self, scene: str) -> Path:
        return self.metadata_dir(scene) / "graph.pkl"

    def source_nodes_file(self, scene: str) -> Path:
        return self.metadata_dir(scene) / SOURCE_NODES_FILE

    def rir_dir(self, scene: str) -> Path:
        return self.root / "binaural_rirs" / self.dataset / scene

    def missing_parts(self, scene: str) -> list[str]:
        """What a scene's download lacks of the three parts ``available_scenes`` needs."""
        parts = (self.points_file(scene), self.graph_file(scene))
        absent = [str(p) for p in parts if not p.is_file()]
        return absent + ([f"the folder {self.rir_dir(scene)}"] if not self.rir_dir(scene).is_dir() else [])

    def rir_file(self, scene: str, receiver_id: int, source_id: int, yaw_index: int) -> Path:
        return self.rir_dir(scene) / str(azimuth_for_yaw(yaw_index)) / f"{receiver_id}_{source_id}.wav"

    def observations_file(self, scene: str) -> Path:
        return self.root / "scene_observations" / self.dataset / f"{scene}.pkl"

    def sounds_dir(self) -> Path:
        return self.root / SOUNDS_SUBDIR

    def available_scenes(self) -> list[str]:
        """Scenes with both metadata (points.txt + graph.pkl) and a binaural RIR folder: a partial
        download is usable for exactly these."""
        meta = self.root / "metadata" / self.dataset
        if not meta.is_dir():
            return []
        return sorted(d.name for d in meta.iterdir() if d.is_dir() and not self.missing_parts(d.name))


# ------------------------------------------------------------------------------------------ metadata
def read_points(path: Path, dataset: str) -> np.ndarray:
    """points.txt (tab separated; column 0 ignored, 1..3 mesh x y z) -> (M, 3) habitat coordinates."""
    remedy = "extract the scene's metadata folder again from the SoundSpaces download"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SoundSpacesDataError(f"SoundSpaces points file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SoundSpacesDataError(f"SoundSpaces points file {path} is unreadable: {exc}; {remedy}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            if len(cells) < 4:
                raise ValueError(f"{len(cells)} tab-separated columns, not 4 (id, x, y, z)")
            rows.append([float(cell) for cell in cells[1:4]])
        except ValueError as exc:
            raise SoundSpacesDataError(f"SoundSpaces points file {path}, line {number}: {exc}; {remedy}") from None
    if not rows:
        raise SoundSpacesDataError(f"SoundSpaces points file {path} holds no point; {remedy}")
    return mesh_to_habitat(np.asarray(rows, dtype=np.float64), dataset)


def read_graph(path: Path) -> nx.Graph:
    """graph.pkl: a pickled networkx graph with integer nodes (rows of points.txt)."""
    try:
        with open(path, "rb") as f:
            graph = DataUnpickler(f).load()
    except FileNotFoundError:
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} does not exist") from None
    except UnsafePickleError as exc:
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} is not a networkx graph of numbers: {exc}") from None
    except Exception as exc:  # unpickling can raise nearly anything on a corrupt file
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} is unreadable: {exc!r}") from exc
    if not isinstance(graph, nx.Graph):
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} holds {type(graph).__name__}, not a networkx graph")
    names = ("_node", "_adj", "_succ", "_pred") if graph.is_directed() else ("_node", "_adj")
    tables = {name: getattr(graph, name, None) for name in names}
    odd = {name: type(table).__name__ for name, table in tables.items() if type(table) is not dict}
    rows = [] if odd else list(tables["_adj"].values())
    if not odd and len({id(row) for row in rows}) < len(rows):  # one row for many nodes: edges of no bytes
        raise SoundSpacesDataError(
            f"SoundSpaces graph file {path} gives several nodes one adjacency row, where networkx keeps a row per node"
        )
    if odd or not all(type(neighbours) is dict for neighbours in rows):
        raise SoundSpacesDataError(
            f"SoundSpaces graph file {path} holds a networkx graph whose tables are not dicts ({odd or '_adj rows'}): "
            "networkx writes them as dicts, and a list would make each lookup a scan"
        )
    if graph.number_of_nodes() == 0:
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} has no nodes")
    bad = [n for n in graph.nodes if not isinstance(n, (int, np.integer)) or int(n) < 0]
    if bad:
        raise SoundSpacesDataError(f"SoundSpaces graph file {path} has non-integer node ids, e.g. {bad[:3]}")
    return graph


@dataclass
class GraphLayout:
    """A SoundSpaces graph in the project's arrays; index i <-> SoundSpaces node ``node_ids[i]``."""

    node_ids: np.ndarray  # (N,) int64, sorted
    positions: np.ndarray  # (N, 3) float64 habitat coordinates (the graph's 'point' attribute)
    neighbors: np.ndarray  # (N, 4) int32: node MOVE_FORWARD reaches at yaw index k, -1 = collision
    geodesic_hops: np.ndarray  # (N, N) int16/int32 graph hop counts, -1 = unreachable


def graph_layout(graph: nx.Graph, points: np.ndarray, graph_path: Path) -> GraphLayout:
    """Positions, forward neighbours (SoundSpaces' direction rule) and hop table of a SoundSpaces graph.

    MOVE_FORWARD at yaw ``90k`` goes to the first graph neighbour (in adjacency order, as SoundSpaces
    iterates) whose direction round(atan2(dz, dx)) in degrees equals (270 - 90k) % 360.
    """
    node_ids = np.array(sorted(int(n) for n in graph.nodes), dtype=np.int64)
    index = {int(n): i for i, n in enumerate(node_ids)}
    positions = np.zeros((len(node_ids), 3), dtype=np.float64)
    mismatched = 0
    for i, node in enumerate(node_ids):
        attrs = graph.nodes[int(node)]
        from_points = points[node] if node < len(points) else None
        if "point" in attrs:
            positions[i] = _point(attrs["point"], node, graph_path)
            if from_points is not None and np.abs(positions[i] - from_points).max() > 1e-3:
                mismatched += 1
        elif from_points is not None:
            positions[i] = from_points
        else:
            raise SoundSpacesDataError(
                f"node {node} of {graph_path} has no 'point' attribute and no row in points.txt ({len(points)} rows)"
            )
    if mismatched:
        logger.warning(
            "%s: %d nodes' 'point' differs from points.txt by > 1 mm; using the graph's",
            graph_path,
            mismatched,
        )
    neighbors = np.full((len(node_ids), 4), -1, dtype=np.int32)
    orientation_to_yaw = {(270 - d) % 360: k for k, d in enumerate(YAWS)}
    for i, node in enumerate(node_ids):
        p1 = positions[i]
        for other in graph[int(node)]:
            j = index[int(other)]
            p2 = positions[j]
            direction = int(np.around(np.rad2deg(np.arctan2(p2[2] - p1[2], p2[0] - p1[0])))) % 360
            k = orientation_to_yaw.get(direction)
            if k is not None and neighbors[i, k] < 0:
                neighbors[i, k] = j
    rows, cols = [], []
    for a, b in graph.edges:
        rows.append(index[int(a)])
        cols.append(index[int(b)])
    n = len(node_ids)
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    dist = shortest_path(adj, unweighted=True, directed=False)
    finite = np.isfinite(dist)
    hop_type = np.int16 if (not finite.any() or dist[finite].max() < np.iinfo(np.int16).max) else np.int32
    hops = np.where(finite, dist, -1).astype(hop_type)
    return GraphLayout(node_ids, positions, neighbors, hops)


def read_source_nodes(path: Path, node_ids: np.ndarray) -> np.ndarray:
    """Project indices of the nodes with RIRs: all nodes (SoundSpaces), or those listed in ``path``."""
    if not path.exists():
        return np.arange(len(node_ids), dtype=np.int64)
    try:
        with warnings.catch_warnings():  # an empty list is refused below by name, not warned about
            warnings.simplefilter("ignore", UserWarning)
            ids = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise SoundSpacesDataError(f"source node list {path} is unreadable: {exc}") from exc
    if ids.size == 0:
        raise SoundSpacesDataError(f"source node list {path} is empty: list the nodes with RIRs, or delete it")
    index = {int(n): i for i, n in enumerate(node_ids)}
    unknown = [int(s) for s in ids if int(s) not in index]
    if unknown:
        raise SoundSpacesDataError(f"source node list {path} names nodes not in the graph: {unknown[:5]}")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():  # a repeated node would be drawn as a goal more often than the others
        raise SoundSpacesDataError(f"source node list {path} repeats nodes: {values[counts > 1][:5].tolist()}")
    return np.array(sorted(index[int(s)] for s in ids), dtype=np.int64)


# ------------------------------------------------------------------------------------------ views
HABITAT_MAX_DEPTH = 10.0  # habitat-lab's default DEPTH_SENSOR.MAX_DEPTH (MIN_DEPTH 0, NORMALIZE_DEPTH true)


class SensorSuiteObservations(dict):
    """Stands in for ``habitat.core.simulator.Observations`` (a dict), so its pickles load without habitat."""


class _ViewsUnpickler(DataUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module.startswith("habitat.") and name == "Observations") or (
            module == __name__ and name == "SensorSuiteObservations"
        ):
            return SensorSuiteObservations
        return super().find_class(module, name)


def _point(point: Any, node: Any, graph_path: Path) -> np.ndarray:
    """A node's 'point': an array or a list of three numbers (a nested list, shared through the pickle's memo, would
    make an array far larger than the file before its shape could be checked)."""
    numbers = isinstance(point, (list, tuple)) and all(isinstance(c, (int, float, np.number)) for c in point)
    if (isinstance(point, np.ndarray) and point.size == 3 and point.dtype.kind in "biuf") or (
        numbers and len(point) == 3
    ):
        return np.asarray(point, dtype=np.float64).reshape(3)
    raise SoundSpacesDataError(f"node {node} of {graph_path} has a 'point' of no three coordinates")


def _largest(depth: Any) -> float:
    """The largest value of a view's depth, in its own dtype (a float16 depth is not copied to float32 for it)."""
    if not isinstance(depth, np.ndarray) or depth.dtype.kind not in "biuf":
        return 0.0  # not an array of numbers: the view's own check names it
    return float(np.max(depth, initial=0.0))


def read_observations(path: Path, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scene_observations pickle -> rgb (N, 4, H, W, 3) uint8 and depth (N, 4, H, W) float16 metres.

    Keys are (node id, yaw degrees); values hold 'rgb' (H, W, 3 or 4: alpha dropped, as habitat does)
    and 'depth' (H, W) or (H, W, 1). SoundSpaces' ``cache_observations.py`` wrote two kinds: before July
    2022 plain dicts of what habitat-sim renders (depth in metres); since then habitat ``Observations``
    from its sensor suite, whose depth is normalised to [0, 1] (clipped to 10 m and divided by 10, the
    default), which is scaled back to metres here. A pickle whose ``Observations`` hold a depth above 1
    was not normalised and is read as metres.
    """
    try:
        with open(path, "rb") as f:
            frames = _ViewsUnpickler(f).load()
    except FileNotFoundError:
        raise SoundSpacesDataError(f"SoundSpaces scene observations {path} do not exist") from None
    except UnsafePickleError as exc:
        raise SoundSpacesDataError(f"SoundSpaces scene observations {path} hold more than views: {exc}") from None
    except Exception as exc:
        raise SoundSpacesDataError(f"SoundSpaces scene observations {path} are unreadable: {exc!r}") from exc
    if not isinstance(frames, dict):
        raise SoundSpacesDataError(f"{path} must hold a dict keyed by (node, yaw), got {type(frames).__name__}")
    suite_depths = {  # each array once: one shared by many keys is not copied for each
        id(f["depth"]): f["depth"] for f in frames.values() if isinstance(f, SensorSuiteObservations) and "depth" in f
    }
    normalised = bool(suite_depths) and max(_largest(d) for d in suite_depths.values()) <= 1.0
    views: dict[int, tuple[int, int]] = {}  # id of an rgb or depth array -> the key it was read at
    for node in node_ids:  # before anything is allocated for them
        for yaw in YAWS:
            frame = frames.get((int(node), yaw))
            if not isinstance(frame, dict) or "rgb" not in frame or "depth" not in frame:
                raise SoundSpacesDataError(
                    f"{path} has no rgb+depth view for key (node {int(node)}, yaw {yaw}); "
                    "render all graph nodes at yaws 0/90/180/270"
                )
            for array in (frame["rgb"], frame["depth"]):
                earlier = views.setdefault(id(array), (int(node), yaw))
                if earlier != (int(node), yaw):  # a few bytes of memo reference would fill a whole view
                    raise SoundSpacesDataError(
                        f"{path} gives (node {int(node)}, yaw {yaw}) the very view of (node {earlier[0]}, yaw "
                        f"{earlier[1]}), where SoundSpaces renders each view on its own"
                    )
    rgb = depth = None
    for i, node in enumerate(node_ids):
        for k, yaw in enumerate(YAWS):
            frame = frames[(int(node), yaw)]
            if not all(isinstance(frame[key], np.ndarray) for key in ("rgb", "depth")):  # as habitat renders them
                kinds = f"rgb {type(frame['rgb']).__name__} and depth {type(frame['depth']).__name__}"
                raise SoundSpacesDataError(
                    f"{path} view (node {int(node)}, yaw {yaw}) holds {kinds}, not numpy arrays (lists nested "
                    "through the pickle's memo would make an array far larger than the file)"
                )
            img = np.asarray(frame["rgb"])
            dep = np.asarray(frame["depth"], dtype=np.float32)
            if dep.ndim == 3 and dep.shape[2] == 1:
                dep = dep[..., 0]
            if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8 or dep.shape != img.shape[:2]:
                raise SoundSpacesDataError(
                    f"{path} view (node {int(node)}, yaw {yaw}): rgb must be (H, W, 3|4) uint8 and depth "
                    "(H, W[, 1]), "
                    f"got rgb {img.dtype}{img.shape} and depth {dep.shape}"
                )
            if np.isnan(dep).any():  # past the depth clamp it would reach the policy as nan logits, naming nothing
                raise SoundSpacesDataError(
                    f"{path} view (node {int(node)}, yaw {yaw}): depth holds nan in {int(np.isnan(dep).sum())} pixels"
                )
            if rgb is None:
                h, w = img.shape[:2]
                rgb = np.zeros((len(node_ids), 4, h, w, 3), dtype=np.uint8)
                depth = np.zeros((len(node_ids), 4, h, w), dtype=np.float16)
            if img.shape[:2] != rgb.shape[2:4]:
                raise SoundSpacesDataError(
                    f"{path} view (node {int(node)}, yaw {yaw}) is {img.shape[:2]}, other views {rgb.shape[2:4]}"
                )
            if normalised and isinstance(frame, SensorSuiteObservations):
                dep = dep * HABITAT_MAX_DEPTH
            rgb[i, k] = img[..., :3]
            depth[i, k] = dep
    assert rgb is not None and depth is not None
    return rgb, depth


# ------------------------------------------------------------------------------------------ RIRs
CUT_SHORT_WARNINGS = ("Reached EOF prematurely", "Incomplete chunk ID")  # scipy's words for a truncated file


def read_wav(path: Path, mmap: bool = False) -> tuple[int, np.ndarray]:
    """``scipy.io.wavfile.read``, except that a file cut short (an interrupted download or copy), which
    scipy only warns about once per process, raises ValueError; its other warnings (a chunk it does not
    know, such as the PEAK chunk libsndfile writes into float files) pass as warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", wavfile.WavFileWarning)
        try:
            rate, data = wavfile.read(path, mmap=mmap)
        except ValueError as exc:  # a cut that leaves part of a frame: its samples do not fill the channels
            if "cannot reshape" in str(exc):
                raise ValueError("the file is cut short: its data ends part-way through a frame") from exc
            raise
    for warning in caught:
        if issubclass(warning.category, wavfile.WavFileWarning) and str(warning.message).startswith(CUT_SHORT_WARNINGS):
            raise ValueError(f"the file is cut short: {warning.message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return rate, data


# what to do about any bad RIR file, appended to each error
SILENCE_REMEDY = ", or set scenes.rir_on_missing=silence to go on with silence for it"  # not said once it is set
RIR_REMEDY = (
    "extract that scene's binaural_rirs folder again from the SoundSpaces download (scripts/import_soundspaces.py "
    f"--check-rirs N checks a scene's files){SILENCE_REMEDY}"
)


def read_rir(path: Path, sample_rate: int) -> np.ndarray:
    """One SoundSpaces binaural RIR wav -> (L, 2) float32; every defect raises naming the file and the remedy."""

    def bad(problem: str) -> SoundSpacesDataError:
        return SoundSpacesDataError(f"binaural RIR {path} {problem}; {RIR_REMEDY}")

    try:
        rate, data = read_wav(path)
    except FileNotFoundError:
        raise bad("does not exist") from None
    except Exception as exc:  # a damaged header raises struct.error, ZeroDivisionError, TypeError, ...
        raise bad(f"is unreadable: {exc!r}") from exc
    if rate != sample_rate:
        raise bad(f"is sampled at {rate} Hz, this dataset's RIRs at {sample_rate}")
    if data.ndim != 2 or data.shape[1] != 2:
        raise bad(f"must have 2 channels, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise bad(f"holds {data.dtype} samples; SoundSpaces RIRs are float32")
    if len(data) == 0:
        raise bad("is empty")
    if not np.isfinite(data).all():
        raise bad("holds non-finite samples")
    return np.ascontiguousarray(data, dtype=np.float32)


_SILENCED: dict[str, set[str]] = {}  # dataset/scene -> the RIR files replaced by silence in this process


def silence_fallback_summary() -> dict[str, int]:
    """How many distinct RIR files were replaced by silence so far in this process, per ``dataset/scene``
    (one read again after the cache dropped it counts once): every world's of the process, for the exit log;
    an evaluation counts its own world's (:func:`silenced_rir_files`)."""
    return {label: len(paths) for label, paths in _SILENCED.items()}


def soundspaces_rirs(scene: Any) -> SoundSpacesRirs | None:
    """The :class:`SoundSpacesRirs` a task scene reads its RIRs from (its ``rir`` is their bound
    :meth:`SoundSpacesRirs.rir`), or None for other RIRs."""
    owner = getattr(getattr(scene, "rir", None), "__self__", None)
    return owner if isinstance(owner, SoundSpacesRirs) else None


def silenced_rir_files(scenes: Iterable[Any]) -> dict[str, set[str]]:
    """The RIR files the SoundSpaces RIRs of ``scenes`` (task scenes, whose ``rir`` is a bound
    :meth:`SoundSpacesRirs.rir`) replaced by silence, per ``dataset/scene``: those of one world only, where
    the process-wide :func:`silence_fallback_summary` counts a file once whichever world read it."""
    found: dict[str, set[str]] = {}
    for scene in scenes:
        owner = soundspaces_rirs(scene)
        if owner is not None and owner.silenced:
            found.setdefault(owner.label, set()).update(owner.silenced)
    return found


def _log_silence_summary() -> None:
    if _SILENCED:
        counts = silence_fallback_summary()
        total = sum(counts.values())
        detail = ", ".join(f"{s}: {n} (e.g. {min(_SILENCED[s])})" for s, n in sorted(counts.items()))
        logger.warning("%d binaural RIRs were missing or unreadable and replaced by silence: %s", total, detail)


class SoundSpacesRirs:
    """Lazy binaural RIRs of one SoundSpaces scene, read per (receiver, source, yaw) from the wav files.

    Same interface as the baked ``SceneRirs``: ``source_nodes``, ``sample_rate`` and
    ``rir(receiver, source_node, yaw_index) -> (L, 2) float32`` with project node indices. At most
    ``cache_bytes`` of RIRs are kept (least recently used evicted), so memory stays bounded whatever
    the dataset size. ``on_missing="silence"`` returns ``sample_rate`` zeros for a bad file, warns and
    counts it; the default ``"error"`` raises :class:`SoundSpacesDataError`.
    """

    def __init__(
        self,
        paths: SoundSpacesPaths,
        scene: str,
        node_ids: np.ndarray,
        source_nodes: np.ndarray,
        cache_bytes: int = 256 * 2**20,
        on_missing: str = "error",
        data_root: str | Path | None = None,
    ) -> None:
        if on_missing not in ("error", "silence"):
            raise ValueError(f"on_missing must be 'error' or 'silence', got {on_missing!r}")
        self.paths = paths
        self.scene = scene
        self.data_root = data_root  # where the scene's graph and views were imported: named in re-bake commands
        self.node_ids = np.asarray(node_ids, dtype=np.int64)
        self.source_nodes = np.asarray(source_nodes, dtype=np.int64)
        self.sample_rate = dataset_spec(paths.dataset).sample_rate
        self.cache_bytes = int(cache_bytes)
        self.on_missing = on_missing
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0
        self.silenced: set[str] = set()  # the files this object replaced by silence (:func:`silenced_rir_files`)

    @property
    def label(self) -> str:
        """``dataset/scene``, as the silenced files are counted under."""
        return f"{self.paths.dataset}/{self.scene}"

    def path(self, receiver: int, source: int, yaw_index: int) -> Path:
        return self.paths.rir_file(self.scene, int(self.node_ids[receiver]), int(self.node_ids[source]), yaw_index)

    def rir(self, receiver: int, source: int, yaw_index: int) -> np.ndarray:
        key = (int(receiver), int(source), int(yaw_index) % 4)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        path = self.path(*key)
        try:
            rir = read_rir(path, self.sample_rate)
        except SoundSpacesDataError as exc:
            if self.on_missing == "error":
                raise
            known = _SILENCED.get(self.label, set())
            if str(path) not in known:  # once per file (the cache may drop it), in full for a scene's 1st, 10th, ...
                count = len(known) + 1
                if decade_count(count):  # a missing folder holds thousands of files
                    reason = str(exc).removesuffix(SILENCE_REMEDY) if count == 1 else f"{path} is missing or unreadable"
                    logger.warning("%s; using silence instead (%d file(s) of %s so far)", reason, count, self.label)
                else:
                    logger.debug("%s; using silence instead", exc)
            self.count_silenced([path])
            rir = np.zeros((self.sample_rate, 2), dtype=np.float32)
        self.reads += 1
        rir.setflags(write=False)
        self._cache[key] = rir
        self._cached_bytes += rir.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return rir

    def __call__(self, receiver: int, source: int, yaw_index: int) -> np.ndarray:
        return self.rir(receiver, source, yaw_index)

    def count_silenced(self, files: Iterable[str | Path]) -> None:
        """Count ``files`` (paths of this scene's RIR files) as replaced by silence, here and process-wide: read
        as silence, or heard through a spectrogram store file that was baked while they were."""
        names = {str(path) for path in files}
        if not names:
            return
        if not _SILENCED:
            atexit.register(_log_silence_summary)
        _SILENCED.setdefault(self.label, set()).update(names)
        self.silenced.update(names)


class SoundSpacesSounds:
    """``sounds/1s_all/{name}.wav`` loaded as SoundSpaces does: mono, resampled by librosa to the RIR rate."""

    def __init__(self, directory: Path, sample_rate: int) -> None:
        try:  # checked when the world loads, not at the first sound an episode asks for
            import librosa  # noqa: F401
        except ImportError as exc:
            raise SoundSpacesDataError(
                "SoundSpaces sounds are resampled with librosa, as SoundSpaces does; install it with "
                "pip install '.[soundspaces]' in the checkout (or pip install librosa)"
            ) from exc
        self.directory = Path(directory)
        self.sample_rate = int(sample_rate)

    def waveform(self, name: str) -> np.ndarray:
        import librosa

        if not is_plain_file_name(name):  # episodes are checked as they load; this guards every other caller
            raise SoundSpacesDataError(
                f"sound {name!r} is not a plain file name; a sound name must be a plain file name (no '/', '\\', "
                f"NUL, not '', '.' or '..'), read from {self.directory}"
            )
        path = self.directory / f"{name}.wav"
        if not path.is_file():
            raise SoundSpacesDataError(f"sound {name!r} has no file {path}")
        try:
            with warnings.catch_warnings():  # only a cut is of interest here, not a chunk scipy skips
                warnings.simplefilter("ignore", wavfile.WavFileWarning)
                read_wav(path)  # librosa reads a file cut short without a word
            audio, _ = librosa.load(path, sr=self.sample_rate, mono=True)
        except Exception as exc:  # audioread/soundfile raise many types on a corrupt file
            raise SoundSpacesDataError(f"sound file {path} is unreadable: {exc!r}") from exc
        if audio.size == 0 or not np.isfinite(audio).all():
            raise SoundSpacesDataError(f"sound file {path} is empty or holds non-finite samples")
        if audio.size != self.sample_rate:  # SoundSpaces plays another second of a longer one at each new pose
            raise SoundSpacesDataError(
                f"sound file {path} lasts {audio.size / self.sample_rate:.3f} s ({audio.size} samples at "
                f"{self.sample_rate} Hz), not one second: SoundSpaces 1.0's AudioNav plays one-second sounds "
                "(sounds/1s_all), whose convolution with each response is what an agent hears"
            )
        return audio.astype(np.float32)

    def __call__(self, name: str) -> np.ndarray:
        return self.waveform(name)
