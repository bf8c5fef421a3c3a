"""Pools of binaural room impulse responses with direct-path azimuth labels, for training DoA heads.

A pool holds, for P listening poses (room, receiver, yaw), the binaural RIRs of J source positions in the
same room: ``rirs`` (P, J, L, 2) with channel 0 the left ear and ``azimuth`` (P, J) in the convention of
:mod:`asgf_nav.models.doa.features`. A target and a distractor are two different sources of one pose.
``line_of_sight`` (P, J) says whether the direct path reaches the receiver: behind a wall the labelled
direct-path azimuth cannot be heard (the sound arrives through doorways), which evaluations report apart.

Two builders: :func:`shoebox_pool` renders random shoebox rooms from the KEMAR HRTF (image sources up
to second order, each arriving through the HRIR of its own direction, plus an exponentially decaying
diffuse tail), which needs nothing baked, or (AV-SSAN's protocol) at a free-field microphone pair;
:func:`scene_pool` reads the baked binaural RIRs of an embedded scene (``asgf_nav.acoustics.rir.SceneRirs``)
at graph nodes, labelled from node positions and yaw.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly
from tqdm import tqdm

from asgf_nav.acoustics.binaural import NOISE_SECONDS, DiffuseField, diffuse_field, diffuse_noise, noise_bank
from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.acoustics.simulate import SPEED_OF_SOUND
from asgf_nav.io import load_npz
from asgf_nav.logging_utils import bar_pacing
from asgf_nav.models.doa.features import lateral_fold, relative_azimuth
from asgf_nav.scenes.store import SceneStoreError

logger = logging.getLogger(__name__)

EAR_HEIGHT = 1.5  # metres, as the SoundSpaces agent


@dataclass
class RirPool:
    rirs: np.ndarray  # (P, J, L, 2) float32
    azimuth: np.ndarray  # (P, J) degrees
    sample_rate: int
    line_of_sight: np.ndarray | None = None  # (P, J) bool; None = not recorded (pools saved before it)
    source: str = ""  # what the responses were rendered from (a cached pool of another source is rebuilt)

    def __post_init__(self) -> None:
        p, j = self.azimuth.shape
        if self.rirs.ndim != 4 or self.rirs.shape[:2] != (p, j) or self.rirs.shape[3] != 2:
            raise ValueError(f"RIR pool: rirs {self.rirs.shape} do not match azimuth {self.azimuth.shape}")
        if j < 2:
            raise ValueError("RIR pool needs at least two sources per pose (target and distractor)")
        if self.line_of_sight is not None and self.line_of_sight.shape != (p, j):
            raise ValueError(f"RIR pool: line_of_sight {self.line_of_sight.shape} does not match ({p}, {j})")

    @property
    def num_poses(self) -> int:
        return int(self.azimuth.shape[0])

    @property
    def sources_per_pose(self) -> int:
        return int(self.azimuth.shape[1])

    def save(self, path) -> None:
        from asgf_nav.io import atomic_savez

        extra = {} if self.line_of_sight is None else {"line_of_sight": self.line_of_sight}
        atomic_savez(
            path, rirs=self.rirs, azimuth=self.azimuth, sample_rate=self.sample_rate, source=self.source, **extra
        )

    def _direct_window(self, direct_ms: float, lead_ms: float) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Energy (P, J, L) over both ears, onsets (P, J) (the first sample reaching 5 % of the peak) and
        the direct-sound window's samples before and after the onset."""
        energy = (self.rirs.astype(np.float64) ** 2).sum(axis=-1)
        onset = np.argmax(energy > 0.05 * energy.max(axis=-1, keepdims=True), axis=-1)
        return energy, onset, round(lead_ms * self.sample_rate / 1000), round(direct_ms * self.sample_rate / 1000)

    def direct_to_reverberant_db(self, direct_ms: float = 2.5, lead_ms: float = 1.0) -> np.ndarray:
        """(P, J) energy ratio (dB) of the direct sound (``lead_ms`` before to ``direct_ms`` after the
        onset, both ears) to the rest of the stored response: how much of what a receiver hears comes
        straight from the source, which bounds how precisely any method can localise it."""
        energy, onset, lead, after = self._direct_window(direct_ms, lead_ms)
        t = np.arange(energy.shape[-1])
        direct = (t >= onset[..., None] - lead) & (t < onset[..., None] + after)
        direct_energy = (energy * direct).sum(axis=-1)
        return 10 * np.log10(direct_energy / np.maximum((energy * ~direct).sum(axis=-1), 1e-20) + 1e-20)

    def direct_sound(self, direct_ms: float = 2.5, lead_ms: float = 1.0) -> np.ndarray:
        """(P, J, W, 2) each response from ``lead_ms`` before its onset to ``direct_ms`` after, the window
        :meth:`direct_to_reverberant_db` calls direct (zero-filled where it starts before time 0)."""
        _, onset, lead, after = self._direct_window(direct_ms, lead_ms)
        padded = np.pad(self.rirs, ((0, 0), (0, 0), (lead, after), (0, 0)))
        index = onset[..., None] + np.arange(lead + after)  # (P, J, W) in padded samples
        return np.take_along_axis(padded, index[..., None], axis=2)

    @classmethod
    def concat(cls, pools: list[RirPool]) -> RirPool:
        """One pool with the poses of ``pools`` (same sample rate, sources per pose and RIR length)."""
        flags = [p.line_of_sight for p in pools]
        los = None if any(f is None for f in flags) else np.concatenate(flags)
        return cls(
            np.concatenate([p.rirs for p in pools]),
            np.concatenate([p.azimuth for p in pools]),
            pools[0].sample_rate,
            los,
        )

    @classmethod
    def load(cls, path) -> RirPool:
        try:
            data = load_npz(path, ("rirs", "azimuth", "sample_rate"))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read RIR pool {path}: {err or type(err).__name__}") from err
        los = data["line_of_sight"].astype(bool) if "line_of_sight" in data else None
        source = str(data["source"]) if "source" in data else ""
        return cls(data["rirs"], data["azimuth"], int(data["sample_rate"]), los, source)


# --------------------------------------------------------------------------------------------- shoebox
def _image_sources(source: np.ndarray, room: np.ndarray, max_order: int) -> tuple[np.ndarray, np.ndarray]:
    """Image positions (M, 3) and reflection orders (M,) of a shoebox [0, room] up to ``max_order``."""
    per_axis = []
    for axis in range(3):
        options = []
        for p, q in itertools.product((0, 1), range(-max_order, max_order + 1)):
            order = abs(2 * q - p)
            if order <= max_order:
                options.append((2 * q * room[axis] + (1 - 2 * p) * source[axis], order))
        per_axis.append(options)
    positions, orders = [], []
    for (x, ox), (y, oy), (z, oz) in itertools.product(*per_axis):
        if ox + oy + oz <= max_order:
            positions.append((x, y, z))
            orders.append(ox + oy + oz)
    return np.asarray(positions), np.asarray(orders)


def render_shoebox_rir(
    room: np.ndarray,
    receiver: np.ndarray,
    source: np.ndarray,
    yaw_deg: float,
    reflection: float,
    drr_db: float,
    t60: float,
    sample_rate: int,
    length: int,
    rng: np.random.Generator,
    max_order: int = 2,
) -> np.ndarray:
    """(length, 2) binaural RIR of a point source in a shoebox room (habitat axes, Y up).

    Specular paths up to ``max_order`` each go through the KEMAR HRIR nearest to their arrival
    direction in the head frame; the later field is noise decaying with ``t60`` whose energy sits ``drr_db``
    below the direct path's, heard through the head as the scenes' tails are (``binaural.diffuse_field``:
    the HRIRs' colour per band and their interaural coherence).
    """
    hrtf = load_hrtf(sample_rate)
    images, orders = _image_sources(source, room, max_order)
    vec = images - receiver[None, :]
    dist = np.linalg.norm(vec, axis=1)
    azimuth = relative_azimuth(np.zeros((1, 3)), vec, yaw_deg)
    elevation = np.rad2deg(np.arcsin(np.clip(vec[:, 1] / dist, -1, 1)))
    hrir_index = hrtf.nearest(azimuth, elevation)
    taps = hrtf.num_taps
    rir = np.zeros((length + taps, 2), dtype=np.float64)
    delays = np.rint(dist / SPEED_OF_SOUND * sample_rate).astype(int)
    gains = reflection**orders / np.maximum(dist, 0.1)
    for i in np.argsort(delays):
        if delays[i] >= length:
            continue
        rir[delays[i] : delays[i] + taps] += gains[i] * hrtf.hrir[hrir_index[i]].T
    direct = int(np.argmin(dist))
    direct_energy = float(np.sum((gains[direct] * hrtf.hrir[hrir_index[direct]]) ** 2))
    start = int(delays[orders == max_order].min()) if np.any(orders == max_order) else delays[direct]
    head = diffuse_field(hrtf, noise_bank(sample_rate, 1).shape[1])
    _add_diffuse_tail(rir, start, length, direct_energy * 10 ** (-drr_db / 10), t60, sample_rate, rng, head)
    return rir[:length].astype(np.float32)


def _add_diffuse_tail(
    rir: np.ndarray,
    start: int,
    length: int,
    energy: float,
    t60: float,
    sample_rate: int,
    rng: np.random.Generator,
    head: DiffuseField | None = None,
) -> None:
    """Add to ``rir[start:length]`` (both channels) noise decaying with ``t60``, of ``energy``: heard through
    ``head``, or with None white and independent at the two channels (free-field microphones)."""
    if start >= length:
        return
    t = np.arange(length - start) / sample_rate
    if head is None:
        noise = rng.standard_normal((t.size, 2))
    else:
        offset = int(rng.integers(0, int(NOISE_SECONDS * sample_rate) - t.size + 1))
        noise = diffuse_noise(sample_rate, head, t.size, offset).astype(np.float64)
    tail = noise * np.exp(-6.9 * t / t60)[:, None]
    tail *= np.sqrt(energy / max(float(np.sum(tail**2)), 1e-12))
    rir[start:length] += tail


PAIR_SPACING = 0.18  # metres between the two microphones of the ``pair`` receiver


def render_pair_rir(
    room: np.ndarray,
    receiver: np.ndarray,
    source: np.ndarray,
    yaw_deg: float,
    reflection: float,
    drr_db: float,
    t60: float,
    sample_rate: int,
    length: int,
    rng: np.random.Generator,
    max_order: int = 2,
    spacing: float = PAIR_SPACING,
) -> np.ndarray:
    """(length, 2) RIR of a point source at a free-field pair of omnidirectional microphones.

    The pair lies on the receiver's left-right axis, ``spacing`` apart and centred on ``receiver``;
    channel 0 is the left microphone. Specular paths up to ``max_order`` arrive at each microphone with
    their own (fractional, band-limited) delay and 1/r spreading, then the same diffuse tail as
    :func:`render_shoebox_rir`. This is the receiver AV-SSAN simulates its data with (a two-microphone
    array in image-source rooms), where only the lateral angle of a source can be measured.
    """
    yaw = np.deg2rad(yaw_deg)
    left = np.array([-np.cos(yaw), 0.0, np.sin(yaw)])
    mics = receiver[None, :] + np.outer([0.5, -0.5], left) * spacing  # (2, 3): left, right
    images, orders = _image_sources(source, room, max_order)
    dist = np.linalg.norm(images[None, :, :] - mics[:, None, :], axis=2)  # (2, M)
    delays = dist / SPEED_OF_SOUND * sample_rate  # samples
    gains = np.where(delays < length - 1, reflection**orders / np.maximum(dist, 0.1), 0.0)
    nfft = 1 << int(np.ceil(np.log2(2 * length)))
    freqs = np.arange(nfft // 2 + 1) / nfft  # cycles per sample
    spectra = np.einsum("em,emf->ef", gains, np.exp(-2j * np.pi * delays[:, :, None] * freqs[None, None, :]))
    rir = np.fft.irfft(spectra, nfft, axis=1)[:, :length].T.copy()  # (length, 2)
    direct = int(np.argmin(dist.mean(axis=0)))
    direct_energy = float(np.sum(gains[:, direct] ** 2))  # a band-limited unit impulse has unit energy
    second = orders == max_order
    start = int(np.rint(delays[:, second].min() if second.any() else delays[:, direct].min()))
    _add_diffuse_tail(rir, start, length, direct_energy * 10 ** (-drr_db / 10), t60, sample_rate, rng)
    return rir.astype(np.float32)


RECEIVERS = ("kemar", "pair")


def shoebox_pool(
    num_poses: int,
    sources_per_pose: int,
    seed: int,
    sample_rate: int = 16000,
    rir_seconds: float = 0.25,
    progress: bool = True,
    receiver: str = "kemar",
    direct_only: bool = False,
) -> RirPool:
    """Random rooms (3-9 m x 3-9 m x 2.4-3.2 m), one receiver and yaw each, sources >= 1 m away.

    ``receiver="kemar"``: the KEMAR head, labels over the full circle. ``receiver="pair"``: the free-field
    microphone pair of :func:`render_pair_rir` with the sources at its height, labelled with the
    front-hemisphere (lateral) angle (:func:`lateral_fold`), all such a pair can tell, as in AV-SSAN.
    ``direct_only``: the same rooms, poses and sources, each response its direct path alone (no
    reflection, no tail), as ``asgf_nav.acoustics.rir.DirectPathRirs`` for the scenes.
    """
    if receiver not in RECEIVERS:
        raise ValueError(f"shoebox receiver must be one of {RECEIVERS}, got {receiver!r}")
    render = render_shoebox_rir if receiver == "kemar" else render_pair_rir
    rng = np.random.default_rng(seed)
    length = int(rir_seconds * sample_rate)
    rirs = np.zeros((num_poses, sources_per_pose, length, 2), dtype=np.float32)
    azimuth = np.zeros((num_poses, sources_per_pose))
    for p in tqdm(range(num_poses), desc=f"shoebox RIRs (seed {seed})", disable=not progress, **bar_pacing(2)):
        room = np.array([rng.uniform(3, 9), rng.uniform(2.4, 3.2), rng.uniform(3, 9)])
        position = np.array([rng.uniform(0.5, room[0] - 0.5), EAR_HEIGHT, rng.uniform(0.5, room[2] - 0.5)])
        yaw = float(rng.uniform(0, 360))
        reflection = float(rng.uniform(0.55, 0.9))
        t60 = float(rng.uniform(0.25, 0.8))
        for j in range(sources_per_pose):
            while True:
                source = np.array(
                    [rng.uniform(0.3, room[0] - 0.3), rng.uniform(0.3, 1.8), rng.uniform(0.3, room[2] - 0.3)]
                )
                if np.hypot(*(source - position)[[0, 2]]) >= 1.0:
                    break
            if receiver == "pair":
                source[1] = EAR_HEIGHT  # in the array's plane: the labelled angle is the one it measures
            args = (room, position, source, yaw, reflection)
            drr_db = float(rng.uniform(-2, 8))
            rirs[p, j] = render(*args, drr_db=drr_db, t60=t60, sample_rate=sample_rate, length=length, rng=rng)
            if direct_only:  # after the full response, whose tail makes the draws every later one depends on
                quiet = np.random.default_rng(0)  # draws a tail of zero energy
                rirs[p, j] = render(*args, np.inf, t60, sample_rate, length, quiet, max_order=0)
            azimuth[p, j] = relative_azimuth(position, source, yaw)
    if receiver == "pair":
        azimuth = lateral_fold(azimuth)
    return RirPool(rirs, azimuth, sample_rate, np.ones(azimuth.shape, dtype=bool))  # empty box: always seen


# --------------------------------------------------------------------------------------------- baked
def scene_pool(
    scene,
    scene_rirs,
    num_poses: int,
    sources_per_pose: int,
    seed: int,
    sample_rate: int = 16000,
    rir_seconds: float = 0.25,
) -> RirPool:
    """Poses at random graph nodes and yaws of a baked scene; sources at other RIR source nodes.

    ``scene`` is an ``asgf_nav.scenes.scene.Scene`` and ``scene_rirs`` its ``SceneRirs``; RIRs are
    resampled to ``sample_rate`` and cut to ``rir_seconds``; labels come from node positions and yaw.
    """
    rng = np.random.default_rng(seed)
    positions = np.asarray(scene.positions, dtype=np.float64)
    sources = np.asarray(scene_rirs.source_nodes)
    if sources.size < sources_per_pose + 1:
        raise SceneStoreError(
            f"scene {scene.name} has {sources.size} acoustic source nodes; a DoA pose draws {sources_per_pose} sources "
            f"besides any at its own node, so bake the scenes with acoustics.sources_per_scene >= "
            f"{sources_per_pose + 1}"
        )
    native = int(scene_rirs.sample_rate)
    length = int(rir_seconds * sample_rate)
    rirs = np.zeros((num_poses, sources_per_pose, length, 2), dtype=np.float32)
    azimuth = np.zeros((num_poses, sources_per_pose))
    line_of_sight = np.zeros((num_poses, sources_per_pose), dtype=bool)
    for p in tqdm(range(num_poses), desc=f"scene RIRs {scene.name}", **bar_pacing(2)):
        receiver = int(rng.integers(scene.num_nodes))
        yaw_index = int(rng.integers(4))
        chosen = [s for s in rng.permutation(sources) if int(s) != receiver][:sources_per_pose]
        for j, src in enumerate(chosen):
            rir = np.asarray(scene_rirs.rir(receiver, int(src), yaw_index), dtype=np.float32)
            if native != sample_rate:
                rir = resample_poly(rir, sample_rate, native, axis=0).astype(np.float32)
            n = min(length, rir.shape[0])
            rirs[p, j, :n] = rir[:n]
            azimuth[p, j] = relative_azimuth(positions[receiver], positions[int(src)], 90.0 * yaw_index)
            line_of_sight[p, j] = has_direct_path(scene_rirs, positions, receiver, int(src))
    return RirPool(rirs, azimuth, sample_rate, line_of_sight)


def has_direct_path(scene_rirs, positions: np.ndarray, receiver: int, source: int, tolerance: float = 0.05) -> bool:
    """Whether the direct sound is among the baked visible specular paths: the first path's travel
    distance equals the straight receiver-source distance (within ``tolerance`` metres). On the source's
    own node the renderer always adds one (``rir.with_at_source_path``)."""
    if int(receiver) == int(source):
        return True
    delays = scene_rirs.paths(receiver, source).delay
    if len(delays) == 0:
        return False
    straight = float(np.linalg.norm(positions[receiver] - positions[source]))
    return abs(float(np.min(delays)) * SPEED_OF_SOUND - straight) < tolerance


def first_reflection(scene_rirs, positions: np.ndarray, receiver: int, source: int) -> tuple[float, float] | None:
    """(seconds after the direct sound, level in dB relative to it, averaged over octave bands) of the
    earliest baked reflection of a line-of-sight pair; ``None`` without line of sight or reflections.
    A reflection within a millisecond or two of the direct sound overlaps it inside the head's own
    response, which blurs the interaural cues of even the first arrival."""
    if not has_direct_path(scene_rirs, positions, receiver, source):
        return None
    paths = scene_rirs.paths(receiver, source)
    order = np.argsort(paths.delay, kind="stable")
    if order.size < 2:
        return None
    direct, reflection = order[0], order[1]
    level = 20 * np.log10(paths.band_amplitude[reflection].mean() / paths.band_amplitude[direct].mean())
    return float(paths.delay[reflection] - paths.delay[direct]), float(level)
