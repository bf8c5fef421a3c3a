"""Read side of the baked acoustics: binaural room impulse responses per (receiver, source, yaw).

``SceneRirs(store).rir(receiver, source_node, yaw_index)`` returns a float32 (L, 2) response (channel 0 =
left ear) for an agent at node ``receiver`` with habitat yaw ``90 * yaw_index`` degrees, the sound at
node ``source_node``; L = max_rir_seconds x sample rate. Time 0 is the emission (travel time kept), or
with ``SceneRirs(store, travel_time=False)`` the straight-line arrival, as SoundSpaces stores its responses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from asgf_nav.acoustics.binaural import (
    NOISE_SECONDS,
    EarlyPaths,
    diffuse_field,
    noise_offsets,
    render_early,
    render_late,
)
from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.acoustics.simulate import SPEED_OF_SOUND
from asgf_nav.scenes.store import SceneStore

logger = logging.getLogger(__name__)

YAW_STEP_DEG = 90.0
NUM_YAWS = 4
# Bumped when the same baked data renders to different responses; caches of rendered responses
# (baked spectrograms, DoA RIR pools) record it. 2: the late tail starts at the direct sound's time.
# 3: a receiver on the source's own node hears the direct sound from AT_SOURCE_DISTANCE straight above.
# 4: the late tail is heard through the head too: the HRIRs' diffuse-field gain per band and ear, and their
# interaural coherence (binaural.diffuse_field).
RENDER_VERSION = 4
# The simulation gives a receiver on the source's own node no direct path (a zero-length path has neither
# a level nor a direction), which left the goal node quieter than a neighbour one grid step away. The
# renderer adds one from this distance (half the finest grid step, 0.5 m on Replica), from straight
# above: as loud as a source can be to a listener standing on its node, from no horizontal direction.
AT_SOURCE_DISTANCE = 0.25
AT_SOURCE_ELEVATION = 90.0
# metres by which a path's travel distance may differ from the straight one and still be the direct sound
DIRECT_PATH_TOLERANCE = 0.05


def with_at_source_path(paths: EarlyPaths, num_bands: int) -> EarlyPaths:
    """``paths`` of a receiver on the source's node, plus the direct sound from :data:`AT_SOURCE_DISTANCE`."""
    return EarlyPaths(
        delay=np.concatenate([[AT_SOURCE_DISTANCE / SPEED_OF_SOUND], paths.delay]),
        azimuth=np.concatenate([[0.0], paths.azimuth]),
        elevation=np.concatenate([[AT_SOURCE_ELEVATION], paths.elevation]),
        band_amplitude=np.concatenate([np.full((1, num_bands), 1.0 / AT_SOURCE_DISTANCE), paths.band_amplitude]),
    )


class SceneRirs:
    """Binaural RIRs of one baked scene, rendered on demand from the compact "acoustics" stage.

    ``travel_time=False`` starts each response at the straight-line travel time (:meth:`direct_sample`)
    instead of the emission, as SoundSpaces' stored responses have no time-of-flight padding: a listener
    of a sound that plays on does not hear the silence before its first arrival, which would tell the
    distance. The tail is padded with zeros to keep the length.
    """

    def __init__(self, store: SceneStore, travel_time: bool = True) -> None:
        store.require("acoustics")
        self.store = store
        self.travel_time = bool(travel_time)
        meta = store.meta("acoustics")
        self.meta = meta
        self.sample_rate = int(meta["sample_rate"])
        self.length = int(round(float(meta["max_rir_seconds"]) * self.sample_rate))
        self.band_centers = np.asarray(meta["band_centers"], dtype=float)
        self.hist_bin_seconds = float(meta["hist_bin_seconds"])
        self.late_floor_db = float(meta["late_floor_db"])
        self.source_nodes = np.asarray(store.array("acoustic_source_nodes"), dtype=np.int32)
        self._slots = {int(n): i for i, n in enumerate(self.source_nodes)}
        self._offsets = store.array("rir_path_offsets")
        self._delay = store.array("rir_path_delay")
        self._direction = store.array("rir_path_direction")
        self._level = store.array("rir_path_level_db")
        self._late = store.array("rir_late_db")
        self.num_receivers = int(self._late.shape[1])
        self._positions = np.asarray(store.array("positions"), dtype=np.float64)
        self._check_values(store)
        if self._noise_span() <= 0:
            raise ValueError(
                f"scene {store.name!r}: acoustics max_rir_seconds {meta['max_rir_seconds']} is not below the "
                f"{NOISE_SECONDS} s noise bank the late tails are cut from; bake with a shorter "
                "acoustics.max_rir_seconds"
            )
        self.hrtf = load_hrtf(self.sample_rate)
        self.diffuse = diffuse_field(self.hrtf, len(self.band_centers))  # the tail heard through the same head

    def _check_values(self, store: SceneStore) -> None:
        """Values no bake writes: a file damaged without changing its size passes the store's shape checks
        and would otherwise fail deep in the renderer, or render noise."""
        offsets = np.asarray(self._offsets)
        if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != len(self._delay) or np.any(np.diff(offsets) < 0):
            raise store.damaged("rir_path_offsets", f"does not index the {len(self._delay)} paths in order")
        for name, values in (("rir_path_delay", self._delay), ("rir_path_level_db", self._level)):
            if not np.isfinite(values).all():
                raise store.damaged(name, "holds values that are not finite")
        if np.any(np.asarray(self._delay) < 0):
            raise store.damaged("rir_path_delay", "holds negative delays")

    @property
    def scene(self) -> str:
        return self.store.name

    def source_slot(self, node: int) -> int:
        try:
            return self._slots[int(node)]
        except KeyError:
            raise KeyError(
                f"node {node} is not a sound source of scene {self.scene!r}; source nodes: {self.source_nodes.tolist()}"
            ) from None

    def _check(self, receiver: int, yaw_index: int) -> None:
        if not 0 <= int(receiver) < self.num_receivers:
            raise IndexError(f"scene {self.scene!r}: receiver {receiver} out of range 0..{self.num_receivers - 1}")
        if not 0 <= int(yaw_index) < NUM_YAWS:
            raise IndexError(f"yaw_index {yaw_index} out of range 0..{NUM_YAWS - 1} (yaw = 90 * index)")

    def paths(self, receiver: int, source_node: int) -> EarlyPaths:
        """Specular paths (float64, dequantised) from ``source_node`` to ``receiver``, as rendered."""
        paths = self.baked_paths(receiver, source_node)
        return with_at_source_path(paths, len(self.band_centers)) if int(receiver) == int(source_node) else paths

    def baked_paths(self, receiver: int, source_node: int) -> EarlyPaths:
        """The simulated paths alone, without the renderer's direct sound on the source's own node."""
        pair = self.source_slot(source_node) * self.num_receivers + int(receiver)
        lo, hi = int(self._offsets[pair]), int(self._offsets[pair + 1])
        direction = np.asarray(self._direction[lo:hi], dtype=np.float64)
        return EarlyPaths(
            delay=np.asarray(self._delay[lo:hi], dtype=np.float64),
            azimuth=direction[:, 0],
            elevation=direction[:, 1],
            band_amplitude=10.0 ** (np.asarray(self._level[lo:hi], dtype=np.float64) / 20.0),
        )

    def direct_sample(self, receiver: int, source_node: int) -> int:
        """The sample at which the straight-line sound arrives (ears and source share the ear height)."""
        distance = np.linalg.norm(self._positions[int(receiver)] - self._positions[int(source_node)])
        distance = max(float(distance), AT_SOURCE_DISTANCE)
        return int(np.floor(distance / SPEED_OF_SOUND * self.sample_rate))

    def late_energy(self, receiver: int, source_node: int) -> np.ndarray:
        """Late energy per band and histogram bin (B, bins), float64; zero where nothing arrived."""
        db = np.asarray(self._late[self.source_slot(source_node), int(receiver)], dtype=np.float64)
        return np.where(db <= self.late_floor_db, 0.0, 10.0 ** (db / 10.0))

    def _render(self, receiver: int, source_node: int, yaw_indices: Sequence[int]) -> np.ndarray:
        """(Y, L, 2) responses of one pair for several yaws (the paths are dequantised once)."""
        paths = self.paths(receiver, source_node)
        yaws = np.asarray(yaw_indices, dtype=float) * YAW_STEP_DEG
        out = render_early(paths, yaws, self.hrtf, self.band_centers, self.length)
        energy = self.late_energy(receiver, source_node)
        span = self._noise_span()
        onset = self.direct_sample(receiver, source_node)
        for y, k in enumerate(yaw_indices):
            offsets = noise_offsets(int(receiver), int(source_node), int(k), span)
            out[y] += render_late(
                energy, self.hist_bin_seconds, self.sample_rate, self.length, offsets, onset, self.diffuse
            )
        if not self.travel_time:
            shift = min(onset, self.length)
            out[:, : self.length - shift] = out[:, shift:].copy()
            out[:, self.length - shift :] = 0.0
        return out

    def _noise_span(self) -> int:
        return int(NOISE_SECONDS * self.sample_rate) - self.length

    def rir(self, receiver: int, source_node: int, yaw_index: int) -> np.ndarray:
        """Binaural RIR (L, 2) float32 for an agent at ``receiver`` facing yaw ``90 * yaw_index``."""
        self._check(receiver, yaw_index)
        return self._render(receiver, source_node, [int(yaw_index)])[0]

    def rirs(self, receivers: Sequence[int], source_nodes: Sequence[int], yaw_indices: Sequence[int]) -> np.ndarray:
        """Batched :meth:`rir`: (B, L, 2); items sharing (receiver, source) are rendered together."""
        receivers = np.asarray(receivers, dtype=np.int64).ravel()
        source_nodes = np.asarray(source_nodes, dtype=np.int64).ravel()
        yaw_indices = np.asarray(yaw_indices, dtype=np.int64).ravel()
        if not len(receivers) == len(source_nodes) == len(yaw_indices):
            raise ValueError(
                f"rirs needs equally long inputs, got {len(receivers)} receivers, "
                f"{len(source_nodes)} sources, {len(yaw_indices)} yaws"
            )
        out = np.empty((len(receivers), self.length, 2), dtype=np.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (r, s, k) in enumerate(zip(receivers, source_nodes, yaw_indices)):
            self._check(int(r), int(k))
            groups.setdefault((int(r), int(s)), []).append(i)
        for (r, s), items in groups.items():
            out[items] = self._render(r, s, [int(yaw_indices[i]) for i in items])
        return out


class DirectPathRirs(SceneRirs):
    """The same scene's responses reduced to the straight path: its HRIR, delay and band levels, with no
    reflection and no late tail; silent where a wall hides the source.

    Rendering the same sound through both splits a received clip exactly, by linearity, into the direct
    sound (the only part whose direction is the labelled one) and everything else: the target a DoA
    head's mask can learn to reconstruct (``DoaTrainConfig.mask_target``) and what the DoA benchmarks
    weigh cues by."""

    def paths(self, receiver: int, source_node: int) -> EarlyPaths:
        paths = super().paths(receiver, source_node)
        straight = np.linalg.norm(self._positions[int(receiver)] - self._positions[int(source_node)])
        straight = max(float(straight), AT_SOURCE_DISTANCE)  # the renderer's own path on the source's node
        keep = np.abs(paths.delay * SPEED_OF_SOUND - straight) < DIRECT_PATH_TOLERANCE
        keep &= paths.delay <= paths.delay.min(initial=np.inf)  # the first arrival only
        return EarlyPaths(paths.delay[keep], paths.azimuth[keep], paths.elevation[keep], paths.band_amplitude[keep])

    def late_energy(self, receiver: int, source_node: int) -> np.ndarray:
        return np.zeros_like(super().late_energy(receiver, source_node))
