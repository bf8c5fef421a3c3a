"""Room acoustics physics on hand-built floor plans, and the baked store's round trip."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import pytest

from asgf_nav.acoustics import bake
from asgf_nav.acoustics.bake import bake_acoustics, bake_source, select_source_nodes, write_acoustics_stage
from asgf_nav.acoustics.binaural import EarlyPaths, diffuse_field, noise_offsets, render_early, render_late
from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.acoustics.rir import AT_SOURCE_DISTANCE, DirectPathRirs, SceneRirs, with_at_source_path
from asgf_nav.acoustics.simulate import SPEED_OF_SOUND, band_centers, build_walls, effective_ism_order, simulate_source
from asgf_nav.config import ExperimentConfig
from asgf_nav.scenes.floorplan import Box, Doorway, FloorPlan, Material, Room
from asgf_nav.scenes.store import SceneStore, SceneStoreError, write_stage

FS = 16000
EAR = 1.5
MATERIALS = {
    "plaster": Material("plaster", (0.9, 0.9, 0.9), absorption=(0.10, 0.08, 0.06, 0.05, 0.05, 0.05), scattering=0.1),
    "wood": Material("wood", (0.6, 0.4, 0.2), absorption=(0.15, 0.11, 0.10, 0.07, 0.06, 0.07), scattering=0.1),
    "tiles": Material("tiles", (1.0, 1.0, 1.0), absorption=(0.30, 0.35, 0.40, 0.45, 0.50, 0.55), scattering=0.1),
    "sofa": Material("sofa", (0.3, 0.3, 0.6), absorption=(0.30, 0.40, 0.50, 0.60, 0.65, 0.65), scattering=0.5),
}


def make_plan(rooms, doors, furniture=(), thickness: float = 0.2, height: float = 2.6) -> FloorPlan:
    """Rectangular rooms with walls around each, doorways (2.1 m high) and sofa-like boxes."""
    rs = [Room(f"r{i}", "living", *r, "wood", "plaster") for i, r in enumerate(rooms)]
    t = thickness
    walls = []
    for r in rs:
        walls += [
            Box(r.x0 - t, r.z0 - t, r.x1 + t, r.z0, 0, height, "plaster"),
            Box(r.x0 - t, r.z1, r.x1 + t, r.z1 + t, 0, height, "plaster"),
            Box(r.x0 - t, r.z0, r.x0, r.z1, 0, height, "plaster"),
            Box(r.x1, r.z0, r.x1 + t, r.z1, 0, height, "plaster"),
        ]
    doorways = [Doorway(*d, 2.1, ("r0", "r1")) for d in doors]
    boxes = [Box(*f, 0.0, 0.8, "sofa", "furniture:sofa") for f in furniture]
    return FloorPlan("hand", "apartment", 0, height, "tiles", rs, walls, boxes, doorways, dict(MATERIALS))


@pytest.fixture(scope="module")
def single_room() -> FloorPlan:
    return make_plan([(0, 0, 6, 5)], [])


@pytest.fixture(scope="module")
def two_rooms() -> FloorPlan:
    """Room A [0,4]x[0,4] and room B [4.2,8.2]x[0,4], a 1 m doorway at z in [1.5, 2.5], a sofa in A."""
    return make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [(4.0, 1.5, 4.2, 2.5)], furniture=[(0.5, 0.5, 1.5, 1.2)])


def at(x: float, z: float) -> np.ndarray:
    return np.array([x, EAR, z])


def binaural(field, receiver: int, yaw_deg: float) -> np.ndarray:
    """Full binaural RIR (L, 2) for receiver ``receiver`` of a simulated field."""
    s = field.images(receiver)
    paths = EarlyPaths(field.delay[s], field.azimuth[s], field.elevation[s], field.band_amplitude[s])
    hrtf = load_hrtf(field.sample_rate)
    early = render_early(paths, [yaw_deg], hrtf, field.band_centers, FS)[0]
    head = diffuse_field(hrtf, len(field.band_centers))  # the tail heard through the same head, as SceneRirs
    return early + render_late(field.histogram[receiver], 0.004, FS, FS, (100, 20000), head=head)


def energy_db(x: np.ndarray) -> float:
    return float(10 * np.log10((x.astype(np.float64) ** 2).sum() + 1e-30))


def onset(x: np.ndarray, rel: float = 0.1) -> int:
    return int(np.argmax(np.abs(x) > rel * np.abs(x).max()))


# --------------------------------------------------------------------------------------------- binaural cues
@pytest.fixture(scope="module")
def left_source_field(single_room):
    """Agent at (3, 2.5); source 1.5 m towards -X, i.e. on the left of an agent facing yaw 0 (-Z)."""
    return simulate_source(single_room, at(1.5, 2.5), at(3.0, 2.5)[None], FS, ism_order=2, rays=500)


def test_source_on_the_left_gives_louder_and_earlier_left_ear(left_source_field):
    rir = binaural(left_source_field, 0, 0.0)
    direct = rir[: onset(rir[:, 0]) + 48]  # direct sound window (3 ms)
    ild = energy_db(direct[:, 0]) - energy_db(direct[:, 1])
    itd = onset(rir[:, 0]) - onset(rir[:, 1])
    assert ild > 3.0
    assert itd < 0


def test_turning_180_degrees_mirrors_the_ears(left_source_field):
    front = binaural(left_source_field, 0, 0.0)
    turned = binaural(left_source_field, 0, 180.0)
    n = onset(front[:, 0]) + 48
    ild_front = energy_db(front[:n, 0]) - energy_db(front[:n, 1])
    ild_turned = energy_db(turned[:n, 0]) - energy_db(turned[:n, 1])
    assert ild_turned < -3.0
    assert ild_turned == pytest.approx(-ild_front, abs=1.0)
    assert onset(turned[:, 1]) < onset(turned[:, 0])


def test_turning_left_puts_a_source_ahead_on_the_right(single_room):
    """Yaws 90 and 270 tell a left turn from a right one (0 and 180 cannot): after TURN_LEFT the agent
    faces -X, so a source that was ahead (-Z) is on its right."""
    field = simulate_source(single_room, at(3.0, 1.0), at(3.0, 2.5)[None], FS, ism_order=2, rays=200)
    for yaw, louder in ((90.0, 1), (270.0, 0)):
        rir = binaural(field, 0, yaw)
        n = onset(rir[:, louder]) + 48
        assert energy_db(rir[:n, louder]) - energy_db(rir[:n, 1 - louder]) > 3.0, yaw


def test_a_source_ahead_and_behind_is_rendered_with_different_spectra(single_room):
    field = simulate_source(single_room, at(3.0, 1.0), at(3.0, 2.5)[None], FS, ism_order=1, rays=0)
    front = binaural(field, 0, 0.0)  # facing -Z: source ahead
    back = binaural(field, 0, 180.0)
    n0 = min(onset(front[:, 0]), onset(back[:, 0]))
    spec = [np.abs(np.fft.rfft(r[n0 : n0 + 64].sum(axis=1), n=256)) + 1e-9 for r in (front, back)]
    freqs = np.fft.rfftfreq(256, 1 / FS)
    band = (freqs > 2000) & (freqs < 7500)
    assert np.abs(20 * np.log10(spec[0][band] / spec[1][band])).mean() > 1.5


def test_direct_sound_follows_the_inverse_distance_law(single_room):
    receivers = np.stack([at(1.0 + d, 2.5) for d in (1.0, 2.0, 4.0)])
    field = simulate_source(single_room, at(1.0, 2.5), receivers, FS, ism_order=1, rays=500)
    direct = [field.band_amplitude[field.images(r)][np.argmin(field.delay[field.images(r)])].mean() for r in range(3)]
    np.testing.assert_allclose(direct, [1.0, 0.5, 0.25], rtol=0.02)
    energies = [energy_db(binaural(field, r, 90.0)) for r in range(3)]  # facing the source
    assert energies[0] > energies[1] > energies[2]


def test_each_first_order_reflection_keeps_what_its_surface_reflects(single_room):
    """Amplitude x distance of a path off one surface is sqrt(1 - absorption) x sqrt(1 - scattering) of that
    surface's material per band (4 kHz values held above): wood floor, tiled ceiling, plaster walls."""
    field = simulate_source(single_room, at(2.0, 2.0), at(4.0, 3.0)[None], FS, ism_order=1, rays=0)
    s = field.images(0)
    gain = field.band_amplitude[s] * (field.delay[s] * SPEED_OF_SOUND)[:, None]
    elevation = field.elevation[s]
    direct = np.argmin(field.delay[s])
    np.testing.assert_allclose(gain[direct], 1.0, rtol=1e-3)

    def reflected(name: str) -> np.ndarray:
        mat = MATERIALS[name]
        plan_bands = 125.0 * 2.0 ** np.arange(len(mat.absorption))  # 125 Hz - 4 kHz
        absorption = np.interp(field.band_centers, plan_bands, mat.absorption)  # constant beyond 4 kHz
        return np.sqrt((1.0 - absorption) * (1.0 - mat.scattering))

    reflections = np.delete(np.arange(len(gain)), direct)
    assert len(reflections) == 6  # floor, ceiling and four walls
    for i in reflections:
        surface = "wood" if elevation[i] < -1 else "tiles" if elevation[i] > 1 else "plaster"
        np.testing.assert_allclose(gain[i], reflected(surface), rtol=1e-3, err_msg=surface)


def test_a_path_is_coloured_by_its_band_amplitudes():
    """Against a path with flat band amplitudes from the same direction (same HRIR), the rendered spectrum
    has each band's amplitude at that band's centre, and the top band's above it."""
    hrtf = load_hrtf(FS)
    centers = np.array([125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0])
    amplitudes = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.1])

    def spectrum(bands: np.ndarray) -> np.ndarray:
        paths = EarlyPaths(np.array([0.01]), np.array([30.0]), np.array([0.0]), bands[None])
        return np.abs(np.fft.rfft(render_early(paths, [0.0], hrtf, centers, 2048)[0], 4096, axis=0))

    ratio = spectrum(amplitudes) / spectrum(np.ones(6))
    freqs = np.fft.rfftfreq(4096, 1 / FS)
    at_centres = ratio[np.searchsorted(freqs, centers)]  # (6, 2 ears)
    np.testing.assert_allclose(at_centres, np.repeat(amplitudes[:, None], 2, axis=1), rtol=0.02)
    np.testing.assert_allclose(ratio[(freqs > 4000) & (freqs < 7000)], 0.1, rtol=0.15)


def test_path_delays_round_to_the_nearest_sample():
    hrtf = load_hrtf(FS)
    centers = np.array([125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0])

    def one_path(delay_samples: float) -> np.ndarray:
        paths = EarlyPaths(np.array([delay_samples / FS]), np.array([30.0]), np.array([0.0]), np.ones((1, 6)))
        return render_early(paths, [0.0], hrtf, centers, 2000)

    np.testing.assert_array_equal(one_path(10.6), one_path(11.0))
    np.testing.assert_array_equal(one_path(10.4), one_path(10.0))
    assert not np.array_equal(one_path(10.0), one_path(11.0))


def test_a_flat_path_renders_its_hrir_scaled_and_delayed() -> None:
    """Equal amplitude a in every band is a gain of exactly a at every frequency, also below the lowest band
    centre and above the highest (the band curve is flat there). So each path renders as a x its measured
    HRIR, starting at its delay in samples: not a sample late, no low end lost."""
    hrtf = load_hrtf(FS)
    centers = 125.0 * 2.0 ** np.arange(6)
    delays, azimuths, amplitudes = np.array([40, 300]), np.array([30.0, 120.0]), np.array([0.5, 0.25])
    paths = EarlyPaths(delays / FS, azimuths, np.zeros(2), amplitudes[:, None] * np.ones((2, 6)))
    got = render_early(paths, [0.0, 90.0], hrtf, centers, 1000)
    expected = np.zeros((2, 1000, 2))
    for y, yaw in enumerate((0.0, 90.0)):
        for delay, azimuth, amplitude in zip(delays, azimuths, amplitudes):
            grid = np.flatnonzero((hrtf.elevation == 0.0) & (hrtf.azimuth == (azimuth - yaw) % 360.0))
            assert len(grid) == 1  # a measured direction: the HRIR is that one, no nearest-neighbour choice
            expected[y, delay : delay + hrtf.num_taps] += amplitude * hrtf.hrir[grid[0]].T
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_the_added_direct_sound_at_the_source_comes_from_straight_above():
    """The goal node's extra direct sound carries no bearing: the same at every yaw, alike in both ears."""
    centers = np.array([125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0])
    nothing = EarlyPaths(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 6)))
    early = render_early(with_at_source_path(nothing, 6), np.arange(4) * 90.0, load_hrtf(FS), centers, FS // 10)
    early = early.astype(np.float64)
    np.testing.assert_array_equal(early, np.broadcast_to(early[0], early.shape))
    assert abs(energy_db(early[0, :, 0]) - energy_db(early[0, :, 1])) < 1.0


# --------------------------------------------------------------------------------------------- multi-room
@pytest.fixture(scope="module")
def door_field(two_rooms):
    """Source in room A; r0 in A at 3.5 m (line of sight), r1 in B at 3.5 m behind the wall, r2 far in B."""
    src = at(1.5, 0.8)
    d = 3.5
    receivers = np.stack(
        [at(1.5, 0.8 + 2.9) + np.array([np.sqrt(d**2 - 2.9**2), 0, 0]), at(1.5 + d, 0.8), at(7.8, 3.6)]
    )
    return src, receivers, simulate_source(two_rooms, src, receivers, FS, ism_order=2, rays=3000)


def test_receiver_behind_a_doorway_is_attenuated_and_late(door_field):
    src, receivers, field = door_field
    same_room = binaural(field, 0, 0.0)
    behind = binaural(field, 1, 0.0)
    assert energy_db(behind) < energy_db(same_room) - 5.0
    straight = np.linalg.norm(receivers[1] - src) / SPEED_OF_SOUND
    first = onset(behind.sum(axis=1), rel=0.05) / FS
    assert first > straight + 1e-3
    assert field.histogram[1].sum() > 0  # reverberation reaches room B


def test_no_connected_receiver_is_silent(two_rooms):
    xs, zs = np.meshgrid(np.arange(0.25, 8.2, 0.5), np.arange(0.25, 4.0, 0.5))
    pts = [(x, z) for x, z in zip(xs.ravel(), zs.ravel()) if two_rooms.room_at(x, z) and not 0.4 < x < 1.6 or z > 1.3]
    receivers = np.stack([at(x, z) for x, z in pts if two_rooms.room_at(x, z)])
    field = simulate_source(two_rooms, at(1.0, 3.0), receivers, FS, ism_order=1, rays=1000)
    assert field.audible.all()
    energy = field.histogram.sum(axis=(1, 2)) + np.array(
        [(field.band_amplitude[field.images(r)] ** 2).sum() for r in range(len(receivers))]
    )
    assert (energy > 0).all()
    assert np.diff(field.offsets).max() > 0


def test_visibility_bug_hidden_receiver_gets_no_phantom_direct_path(two_rooms):
    """pyroomacoustics 0.10.1 re-inserts a blocked direct path when no image is visible (LCAV#441)."""
    src, hidden = at(1.0, 3.5), at(7.5, 3.6)  # no straight line through the doorway
    assert two_rooms.segment_blocked((1.0, 3.5), (7.5, 3.6))
    field = simulate_source(two_rooms, src, hidden[None], FS, ism_order=0, rays=300)
    assert np.diff(field.offsets)[0] == 0  # no specular path at all
    rir = binaural(field, 0, 0.0)
    straight = int(np.linalg.norm(hidden - src) / SPEED_OF_SOUND * FS)
    early = np.abs(rir[: straight + 16]).max()
    assert early < 0.05 * np.abs(rir).max() + 1e-12

    # The library itself, on the same geometry, is what the guard protects against.
    hpf = pra.constants.get("rir_hpf_enable")
    pra.constants.set("rir_hpf_enable", False)
    try:
        room = pra.Room(build_walls(two_rooms, FS), fs=FS, max_order=0)
        room.sources.append(pra.SoundSource(src[[0, 2, 1]]))
        room.add_microphone_array(pra.MicrophoneArray(hidden[[0, 2, 1]][:, None], FS))
        room.compute_rir()
    finally:
        pra.constants.set("rir_hpf_enable", hpf)  # a library-wide setting: later tests get the default
    phantom = np.abs(room.rir[0][0]).max()
    assert phantom > 0.05  # full-strength direct sound that geometry forbids (fixed upstream => drop this)


def test_visibility_bug_one_hidden_receiver_among_several_does_not_crash(two_rooms):
    src = at(1.0, 3.5)
    receivers = np.stack([at(7.5, 3.6), at(2.0, 3.5), at(3.0, 2.0)])
    field = simulate_source(two_rooms, src, receivers, FS, ism_order=0, rays=300)
    counts = np.diff(field.offsets)
    assert counts.tolist() == [0, 1, 1]
    np.testing.assert_allclose(field.delay[field.images(1)], 1.0 / SPEED_OF_SOUND, rtol=1e-5)


# --------------------------------------------------------------------------------------------- baking + store
@pytest.fixture(scope="module")
def baked_scene(tmp_path_factory, two_rooms) -> tuple[Path, float]:
    directory = tmp_path_factory.mktemp("store") / "scenes" / "tiny" / "hand"
    xs, zs = np.meshgrid(np.arange(0.25, 8.2, 1.0), np.arange(0.25, 4.0, 1.0))
    nodes = [
        (x, 0.0, z)
        for x, z in zip(xs.ravel(), zs.ravel())
        if two_rooms.room_at(x, z) and not two_rooms.furniture[0].contains_xz(x, z, 0.1)
    ]
    write_stage(
        directory,
        "layout",
        {"positions": np.asarray(nodes, dtype=np.float32)},
        meta={"dataset": "tiny", "preset": "tiny", "sample_rate": FS},
        files={"floorplan.json": two_rooms.to_json()},
    )
    cfg = ExperimentConfig()
    cfg.acoustics.sources_per_scene = 3
    cfg.acoustics.rays = 1000
    bake_source(directory, cfg, 1)  # an interrupted bake leaves finished sources behind
    overwritten = directory / "acoustics_partial" / "source_001.npz"
    data = bytearray(overwritten.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # bytes overwritten, the size kept: baked again too
    overwritten.write_bytes(bytes(data))
    bake_source(directory, cfg, 2)
    damaged = directory / "acoustics_partial" / "source_002.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short since: baked again, not a failure at the end
    start = time.perf_counter()
    bake_acoustics(directory, cfg)
    return directory, time.perf_counter() - start


def test_tiny_scene_bakes_quickly_and_cleans_up(baked_scene):
    directory, seconds = baked_scene
    assert seconds < 30.0
    assert not (directory / "acoustics_partial").exists()
    store = SceneStore(directory)
    assert store.has_stage("acoustics")
    assert store.meta("acoustics")["sample_rate"] == FS


def test_source_nodes_are_spread_and_deterministic():
    pts = np.array([[x, 0, z] for x in range(10) for z in range(10)], dtype=float)
    a, b = select_source_nodes(pts, 4), select_source_nodes(pts, 4)
    np.testing.assert_array_equal(a, b)
    chosen = pts[a][:, [0, 2]]
    gaps = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1) + np.eye(4) * 99
    assert gaps.min() >= 5.0


def test_stored_rirs_match_the_simulation_within_quantisation(baked_scene, two_rooms):
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    positions = np.asarray(SceneStore(directory).array("positions"), dtype=float)
    node = int(rirs.source_nodes[0])
    receiver = int(np.argmax(np.linalg.norm(positions - positions[node], axis=1)))
    ears = positions + np.array([0, EAR, 0])
    field = simulate_source(two_rooms, ears[node], ears[[node, receiver]], FS, ism_order=3, rays=1000)
    hrtf = load_hrtf(FS)
    span = 4 * FS - FS
    for col, rec in enumerate((node, receiver)):
        s = field.images(col)
        strong = 20 * np.log10(field.band_amplitude[s].max(axis=1)) > -120
        paths = EarlyPaths(
            field.delay[s][strong],
            field.azimuth[s][strong],
            field.elevation[s][strong],
            field.band_amplitude[s][strong],
        )
        if rec == node:  # the simulation has no zero-length path; the renderer adds the at-source one
            paths = with_at_source_path(paths, len(field.band_centers))
        for k in range(4):
            expected = render_early(paths, [90.0 * k], hrtf, field.band_centers, FS)[0]
            onset = rirs.direct_sample(rec, node)
            offsets = noise_offsets(rec, node, k, span)
            head = diffuse_field(hrtf, len(field.band_centers))
            expected += render_late(field.histogram[col], 0.004, FS, FS, offsets, onset, head)
            got = rirs.rir(rec, node, k)
            assert got.shape == (FS, 2) and got.dtype == np.float32
            scale = np.abs(expected).max()
            np.testing.assert_allclose(got, expected, atol=0.01 * scale)


def test_nothing_arrives_before_the_straight_line_sound(baked_scene):
    """The late tail's envelope interpolates between 4 ms bin centres; it must still start no earlier
    than the direct sound (the histogram bin holding it would otherwise leak up to 6 ms ahead)."""
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    positions = np.asarray(SceneStore(directory).array("positions"), dtype=float)
    leaked = 0
    for node in rirs.source_nodes:
        for receiver in range(rirs.num_receivers):
            if receiver == node:
                continue
            first = rirs.direct_sample(receiver, int(node))
            assert first == int(np.linalg.norm(positions[receiver] - positions[node]) / SPEED_OF_SOUND * FS)
            response = rirs.rir(receiver, int(node), 0)
            assert np.abs(response[:first]).max(initial=0.0) == 0.0, (receiver, node)
            energy = rirs.late_energy(receiver, int(node))
            before = render_late(energy, 0.004, FS, FS, (100, 20000))[:first]
            leaked += np.abs(before).max(initial=0.0) > 0
    assert leaked > 0  # without the onset the tail does start early for some pairs


@pytest.fixture(scope="module")
def replica_grid_scene(tmp_path_factory, single_room) -> Path:
    """The single room on Replica's 0.5 m node grid, four sources."""
    directory = tmp_path_factory.mktemp("grid") / "scenes" / "tiny" / "hand"
    xs, zs = np.meshgrid(np.arange(0.25, 6.0, 0.5), np.arange(0.25, 5.0, 0.5))
    write_stage(
        directory,
        "layout",
        {"positions": np.asarray([(x, 0.0, z) for x, z in zip(xs.ravel(), zs.ravel())], dtype=np.float32)},
        meta={"dataset": "tiny", "preset": "tiny", "sample_rate": FS},
        files={"floorplan.json": single_room.to_json()},
    )
    cfg = ExperimentConfig()
    cfg.acoustics.sources_per_scene = 4
    cfg.acoustics.rays = 1000
    bake_acoustics(directory, cfg)
    return directory


def test_the_goal_node_is_louder_than_every_neighbour(replica_grid_scene):
    """The simulation gives a receiver on the source's own node no direct path; without the renderer's
    at-source path the goal sounded quieter than a neighbour one step away at about half the sources of
    the Replica-like scenes (benchmarks/goal_loudness.py), so loudness stopped rising at the last step."""
    directory = replica_grid_scene
    rirs = SceneRirs(SceneStore(directory))
    positions = np.asarray(SceneStore(directory).array("positions"), dtype=float)

    def energy(receiver: int, node: int) -> float:
        return float((rirs.rirs([receiver] * 4, [node] * 4, range(4)).astype(np.float64) ** 2).sum())

    quieter_without = 0
    for node in map(int, rirs.source_nodes):
        gap = np.linalg.norm(positions - positions[node], axis=1)
        neighbours = np.flatnonzero((gap > 0) & (gap < 0.51))
        assert len(neighbours) > 0
        loudest = max(energy(int(n), node) for n in neighbours)
        assert energy(node, node) > 1.5 * loudest, node
        assert len(rirs.paths(node, node).delay) == len(rirs.baked_paths(node, node).delay) + 1
        first = rirs.direct_sample(node, node)
        assert first == int(AT_SOURCE_DISTANCE / SPEED_OF_SOUND * FS)
        assert np.abs(rirs.rir(node, node, 0)[:first]).max(initial=0.0) == 0.0
        early = render_early(rirs.baked_paths(node, node), np.arange(4) * 90.0, rirs.hrtf, rirs.band_centers, FS)
        tail = rirs.late_energy(node, node)
        tails = [render_late(tail, 0.004, FS, FS, noise_offsets(node, node, k, 3 * FS), 0) for k in range(4)]
        late = sum((t.astype(np.float64) ** 2).sum() for t in tails)
        quieter_without += (early.astype(np.float64) ** 2).sum() + late < loudest
    assert quieter_without > 0  # the simulated paths alone leave some goals quieter than a neighbour
    # from straight above: both ears hear the added direct sound alike, whatever the yaw
    direct = rirs.rir(node, node, 1)[first : first + 64].astype(np.float64)
    assert abs(energy_db(direct[:, 0]) - energy_db(direct[:, 1])) < 3.0


def test_without_travel_time_a_response_starts_at_the_straight_line_arrival(baked_scene):
    """SoundSpaces' stored responses have no time-of-flight padding: the same response, cut by the
    straight-line travel time and padded at the end. A heard direct sound then starts at once, whatever the
    distance; a pair behind a wall keeps only its detour's delay."""
    directory, _ = baked_scene
    kept, cut = SceneRirs(SceneStore(directory)), SceneRirs(SceneStore(directory), travel_time=False)
    nodes = cut.source_nodes
    receivers, sources, yaws = [0, 3, 5, int(nodes[1])], [nodes[0], nodes[1], nodes[2], nodes[1]], [0, 1, 3, 2]
    delays = []
    for r, s, y, batched in zip(receivers, sources, yaws, cut.rirs(receivers, sources, yaws)):
        first, full = kept.direct_sample(r, int(s)), kept.rir(r, int(s), y)
        response = cut.rir(r, int(s), y)
        np.testing.assert_array_equal(batched, response)
        np.testing.assert_array_equal(response[: len(full) - first], full[first:])
        assert not response[len(full) - first :].any() and len(response) == len(full)
    for receiver in range(cut.num_receivers):
        first, full = kept.direct_sample(receiver, int(nodes[0])), kept.rir(receiver, int(nodes[0]), 0)
        if receiver != nodes[0] and np.flatnonzero(np.abs(full).sum(axis=1))[0] == first:  # heard from that time on
            response = cut.rir(receiver, int(nodes[0]), 0)
            delays.append((first, int(np.flatnonzero(np.abs(response).sum(axis=1))[0])))
    assert len(delays) >= 2 and max(first for first, _ in delays) * 1000 / FS > 3.0
    assert all(start == 0 for _, start in delays)  # sound from the first sample on, whatever the distance


def test_batched_rirs_equal_single_ones_and_errors_name_the_scene(baked_scene):
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    nodes = rirs.source_nodes
    receivers, sources, yaws = [0, 3, 3, 5], [nodes[0], nodes[1], nodes[1], nodes[2]], [0, 1, 3, 2]
    batch = rirs.rirs(receivers, sources, yaws)
    for i in range(4):
        np.testing.assert_array_equal(batch[i], rirs.rir(receivers[i], sources[i], yaws[i]))
    assert not np.allclose(batch[1], batch[2])  # yaw matters
    left, right = batch[1][:, 0], batch[1][:, 1]
    assert abs(np.corrcoef(left[FS // 4 :], right[FS // 4 :])[0, 1]) < 0.5  # decorrelated late tail
    non_source = next(n for n in range(rirs.num_receivers) if n not in set(nodes.tolist()))
    with pytest.raises(KeyError, match=f"node {non_source} .*scene 'hand'"):
        rirs.source_slot(non_source)


def test_batched_rirs_of_one_receiver_keep_each_source_apart(baked_scene) -> None:
    """Items are grouped by (receiver, source): several agents at one node hearing different goals (or one
    agent's several sources) each get their own source's response, not the first one's."""
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    receiver = next(n for n in range(rirs.num_receivers) if n not in set(rirs.source_nodes.tolist()))
    sources, yaws = [int(n) for n in rirs.source_nodes], [0, 0, 2]
    batch = rirs.rirs([receiver] * 3, sources, yaws)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], rirs.rir(receiver, sources[i], yaws[i]))
    assert not np.allclose(batch[0], batch[1])  # different sources sound different


def test_no_two_yaws_share_a_late_tail(baked_scene) -> None:
    """The tail's noise offsets depend on the yaw too: after the early reflections (ISM order 3 ends well
    before 250 ms here) the four headings of one pair are uncorrelated, not one tail repeated."""
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    node = int(rirs.source_nodes[0])
    late = rirs.rirs([3] * 4, [node] * 4, range(4))[:, FS // 4 :, 0].astype(np.float64)
    assert np.abs(late).max() > 0
    corr = np.corrcoef(late)
    assert np.abs(corr[~np.eye(4, dtype=bool)]).max() < 0.5


def test_out_of_range_receivers_and_yaws_are_refused_by_name(baked_scene) -> None:
    """One past the last receiver, or yaw index 4 (360 degrees, a caller that forgot the modulo), is an
    error naming the bound, not another pair's response or a silently re-keyed tail."""
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    node = int(rirs.source_nodes[0])
    with pytest.raises(IndexError, match=f"receiver {rirs.num_receivers} out of range"):
        rirs.rir(rirs.num_receivers, node, 0)
    with pytest.raises(IndexError, match="yaw_index 4 out of range"):
        rirs.rir(0, node, 4)
    with pytest.raises(IndexError, match="yaw_index 4 out of range"):
        rirs.rirs([0], [node], [4])


def test_the_simulation_draws_nothing_at_random(single_room):
    """Bakes are reproducible without a seed: the same inputs give the same field whatever the global
    random state."""
    src, rec = at(1.5, 2.5), at(4.0, 3.0)
    np.random.seed(1)
    first = simulate_source(single_room, src, rec[None], FS, ism_order=2, rays=500)
    np.random.seed(2)
    pra.random.seed(3)
    again = simulate_source(single_room, src, rec[None], FS, ism_order=2, rays=500)
    assert first.histogram.max() > 0
    np.testing.assert_array_equal(first.histogram, again.histogram)
    np.testing.assert_array_equal(first.band_amplitude, again.band_amplitude)
    np.testing.assert_array_equal(first.delay, again.delay)


def test_late_tail_energy_agrees_with_pyroomacoustics_own_tail(single_room):
    from pyroomacoustics.simulation.rt import compute_rt_rir

    pra.random.seed(0)  # its tail is noise from pyroomacoustics' own generator
    src, rec = at(1.5, 2.5), at(4.0, 3.0)
    field = simulate_source(single_room, src, rec[None], FS, ism_order=2, rays=3000)
    mine = render_late(field.histogram[0], 0.004, FS, FS, (10, 5000))
    bands = pra.acoustics.OctaveBandsFactory(fs=FS, base_frequency=125)
    reference = compute_rt_rir(
        float(np.linalg.norm(src - rec)) / SPEED_OF_SOUND,
        [field.histogram[0]],
        {"response": np.ones(1), "is_impulse_response": False},
        0.004,
        64,
        6 * 5 * 2.6,
        81,
        SPEED_OF_SOUND,
        FS,
        bands,
    )
    for ear in range(2):
        assert energy_db(mine[:, ear]) == pytest.approx(energy_db(reference), abs=2.0)


def test_the_ray_traced_tail_starts_past_the_image_sources_order(single_room):
    """The image sources hold every reflection up to their order; the tracer's histogram must hold none of them
    a second time. Before ACOUSTICS_VERSION 3 it logged from that order on, so the second-order reflections
    (the first ones at order 1) were in both parts."""
    from asgf_nav.acoustics.simulate import RECEIVER_RADIUS, _ray_trace

    src, rec = at(3.5, 4.5), at(3.0, 4.0)  # near a wall: second and third orders more than a bin apart
    shoebox = pra.ShoeBox([6.0, 5.0, 2.6], fs=FS, max_order=3)
    shoebox.add_source(src[[0, 2, 1]])
    shoebox.add_microphone(rec[[0, 2, 1]])
    shoebox.image_source_model()
    images = shoebox.sources[0]
    arrival = np.linalg.norm(images.images - rec[[0, 2, 1], None], axis=0) / SPEED_OF_SOUND
    first_third, first_second = arrival[images.orders == 3].min(), arrival[images.orders == 2].min()
    bin_end = np.arange(1, 251) * 0.004

    def early_energy(histogram: np.ndarray) -> float:  # bins wholly before any third-order ray can be logged
        before = bin_end < first_third - RECEIVER_RADIUS / SPEED_OF_SOUND
        return float(histogram[:, : before.sum()].sum())

    field = simulate_source(single_room, src, rec[None], FS, ism_order=2, rays=3000)
    assert (first_second // 0.004 + 1) * 0.004 < first_third - RECEIVER_RADIUS / SPEED_OF_SOUND  # a bin between
    assert early_energy(field.histogram[0]) == 0.0 and field.histogram[0].sum() > 0
    repeated = _ray_trace(single_room, None, True, FS, 2, 3000, 1.0, src, rec[[0, 2, 1]][None])
    assert early_energy(np.asarray(repeated[0][0][0])) > 0.0  # the tracer at the image order: what was doubled


@pytest.mark.parametrize("band", range(6))
def test_each_band_of_the_late_tail_sounds_in_its_own_octave(band: int) -> None:
    """Energy in one octave band (centre 125 x 2^band Hz) must come out in that octave, [c/sqrt2, c sqrt2):
    the band's noise, not a neighbour's (the tail's colour is what the absorbing materials set)."""
    energy = np.zeros((7, 100))
    energy[band] = 1e-3
    tail = render_late(energy, 0.004, FS, FS // 2, (0, 1000)).astype(np.float64)
    power = np.abs(np.fft.rfft(tail, axis=0)) ** 2
    freqs = np.fft.rfftfreq(FS // 2, 1 / FS)
    centre = 125.0 * 2.0**band
    in_octave = (freqs >= centre / np.sqrt(2)) & (freqs < centre * np.sqrt(2))
    np.testing.assert_array_less(0.75, power[in_octave].sum(axis=0) / power.sum(axis=0))  # both ears


@pytest.mark.parametrize(
    "hbss,bins,length", [(176, 250, 44100), (64, 250, 16000), (176, 40, 44100), (175, 30, 8000), (64, 2, 100)]
)
def test_late_envelope_equals_linear_interpolation_between_bin_centres(hbss, bins, length):
    from asgf_nav.acoustics.binaural import _envelope

    rng = np.random.default_rng(hbss + bins)
    energy = rng.random((8, bins))
    energy[:, -min(3, bins - 1) :] = 0.0
    centres = (np.arange(bins) + 0.5) * hbss
    t = np.arange(length)
    expected = np.stack([np.interp(t, centres, e, left=e[0], right=0.0) for e in energy])
    np.testing.assert_allclose(_envelope(energy, hbss, length), expected, rtol=0, atol=1e-12)
    single = _envelope(energy.astype(np.float32), hbss, length)  # the dtype render_late uses
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-6)


def test_responses_longer_than_the_noise_bank_are_refused_by_name(baked_scene):
    directory, _ = baked_scene
    real = SceneStore(directory)

    class LongStore:
        """The baked scene, as if baked with 4 s responses."""

        name = real.name

        def require(self, stage: str) -> None:
            real.require(stage)

        def array(self, key: str):
            return real.array(key)

        def meta(self, stage: str) -> dict:
            return {**real.meta(stage), "max_rir_seconds": 4.0}

    with pytest.raises(ValueError, match=r"scene 'hand': acoustics max_rir_seconds 4.0 .*4.0 s noise bank"):
        SceneRirs(LongStore())


def test_partial_acoustics_of_other_settings_are_dropped(tmp_path: Path) -> None:
    from asgf_nav.acoustics.bake import _partial_dir, _source_file

    partial = _partial_dir(tmp_path, {"rays": 100})
    _source_file(partial, 0).write_bytes(b"baked with 100 rays")
    assert _source_file(_partial_dir(tmp_path, {"rays": 100}), 0).exists()  # same settings: resumed
    assert not _source_file(_partial_dir(tmp_path, {"rays": 3000}), 0).exists()  # other settings: dropped


def test_a_low_doorway_has_a_lintel_above_it() -> None:
    from asgf_nav.acoustics.simulate import build_walls

    plan = make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [(4.0, 1.5, 4.2, 2.5)])  # door 2.1 m, ceiling 2.6 m
    spans = [(float(w.corners[2].min()), float(w.corners[2].max())) for w in build_walls(plan, 16000, furniture=False)]
    assert any(lo == pytest.approx(2.1) and hi == pytest.approx(2.6) for lo, hi in spans)  # lintel faces
    assert any(lo == pytest.approx(2.1) and hi == pytest.approx(2.1) for lo, hi in spans)  # doorway ceiling


def _reflection_factor(name: str, centers: np.ndarray) -> np.ndarray:
    """sqrt((1 - absorption)(1 - scattering)) per band of material ``name`` (4 kHz absorption held above)."""
    mat = MATERIALS[name]
    absorption = np.interp(centers, 125.0 * 2.0 ** np.arange(len(mat.absorption)), mat.absorption)
    return np.sqrt((1.0 - absorption) * (1.0 - mat.scattering))


def test_a_lintel_face_reflects_sound_like_the_wall_around_it() -> None:
    """Source (2, 2.35, 2) and receiver (3, 2.35, 2) sit above the 2.1 m door height in room A: the x = 4 wall
    in front of them is the doorway's lintel face there (z in [1.5, 2.5], y in [2.1, 2.6]), so its image
    at x = 6 gives a 3 m path with plaster's reflection factor / 3, as off any other plaster wall."""
    plan = make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [(4.0, 1.5, 4.2, 2.5)])
    field = simulate_source(plan, np.array([2.0, 2.35, 2.0]), np.array([[3.0, 2.35, 2.0]]), FS, ism_order=1, rays=0)
    s = field.images(0)
    hits = np.flatnonzero(np.abs(field.delay[s] - 3.0 / SPEED_OF_SOUND) < 1e-7)
    assert len(hits) == 1, "no reflection off the lintel face"
    off_lintel = hits[0]
    plaster = _reflection_factor("plaster", field.band_centers)
    np.testing.assert_allclose(field.band_amplitude[s][off_lintel], plaster / 3, rtol=1e-5)
    assert field.azimuth[s][off_lintel] == pytest.approx(270.0)  # from +X: an agent turns to yaw 270 to face it


def test_doorway_jambs_stop_at_the_door_height() -> None:
    """The two side faces of a 2.1 m doorway gap (z = 1.5 and z = 2.5, x in [4.0, 4.2]) reach from the floor
    to the doorway's ceiling, not to the room's: above 2.1 m the gap is solid lintel, and faces there give
    phantom reflections."""
    plan = make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [(4.0, 1.5, 4.2, 2.5)])
    jambs = [
        w.corners
        for w in build_walls(plan, FS, furniture=False)
        if np.ptp(w.corners[1]) < 1e-6 and w.corners[0].min() > 3.99 and w.corners[0].max() < 4.21
    ]
    assert sorted(round(float(c[1, 0]), 4) for c in jambs) == [1.5, 2.5]
    for corners in jambs:
        assert (corners[2].min(), corners[2].max()) == pytest.approx((0.0, 2.1))


@pytest.mark.parametrize(
    "walls,order,max_images,expected",
    [(10, 3, 1000, 3), (10, 3, 999, 2), (10, 3, 100, 2), (10, 3, 99, 1), (200, 3, 100, 1), (200, 0, 100, 0)],
)
def test_the_image_order_is_lowered_to_fit_max_images_but_never_below_one(
    walls: int, order: int, max_images: int, expected: int
) -> None:
    """walls ** order may equal max_images (10^3 = 1000 fits); however many walls, order 1 stays (the direct
    sound and first reflections are always exact); order 0 asked for stays 0."""
    assert effective_ism_order(walls, order, max_images) == expected


def test_a_receiver_above_the_ceiling_hears_nothing(single_room) -> None:
    """A receiver 3 m high under the 2.6 m ceiling is outside the air: inaudible, no paths, no tail."""
    receivers = np.stack([at(4.0, 3.0), np.array([4.0, 3.0, 3.0])])
    field = simulate_source(single_room, at(2.0, 2.0), receivers, FS, ism_order=1, rays=200, max_seconds=0.2)
    assert field.audible.tolist() == [True, False]
    assert np.diff(field.offsets).tolist()[1] == 0 and np.diff(field.offsets)[0] > 0
    assert field.histogram[0].sum() > 0 and not field.histogram[1].any()


def test_paths_later_than_the_response_are_not_kept(single_room) -> None:
    """Source (2, 1.5, 2), receiver (4, 1.5, 3) in the 6 x 5 x 2.6 m room, responses 4 / 343 s long: of the
    direct sound and six first-order paths only the direct (sqrt 5 m), ceiling (sqrt 9.84 m) and floor
    (sqrt 14 m) ones arrive in time; the walls' (sqrt 29 m and longer) are dropped."""
    field = simulate_source(single_room, at(2.0, 2.0), at(4.0, 3.0)[None], FS, ism_order=1, rays=0, max_seconds=4 / 343)
    expected = np.sqrt([5.0, 9.84, 14.0]) / SPEED_OF_SOUND
    np.testing.assert_allclose(np.sort(field.delay[field.images(0)]), expected, rtol=1e-6)
    assert field.histogram.shape[-1] == 3  # ceil(11.7 ms / 4 ms) bins


def test_late_energy_goes_to_the_receiver_that_heard_it() -> None:
    """Two rooms without a doorway: a source in room B leaves the receiver in room A (listed first) with no
    tail at all, and the receiver in B keeps its own."""
    plan = make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [])
    receivers = np.stack([at(2.0, 2.0), at(7.0, 3.0)])
    field = simulate_source(plan, at(6.0, 2.0), receivers, FS, ism_order=1, rays=200, max_seconds=0.2)
    assert field.audible.tolist() == [False, True]
    assert not field.histogram[0].any()
    assert field.histogram[1].sum() > 0


def test_a_wall_reflects_with_the_material_of_its_own_box() -> None:
    """The east wall box of a plaster room made of tiles: the path off it (image at x = 10, sqrt 37 m) carries
    the tiles' reflection factor, the west wall's (image at x = -2, also sqrt 37 m) plaster's."""
    plan = make_plan([(0, 0, 6, 5)], [])
    assert plan.walls[3].x0 == 6.0  # the east wall box
    plan.walls[3] = replace(plan.walls[3], material="tiles")
    field = simulate_source(plan, at(2.0, 2.0), at(4.0, 3.0)[None], FS, ism_order=1, rays=0)
    s = field.images(0)
    side = np.flatnonzero(np.abs(field.delay[s] - np.sqrt(37.0) / SPEED_OF_SOUND) < 1e-7)
    by_azimuth = {round(float(field.azimuth[s][i])): field.band_amplitude[s][i] for i in side}
    east, west = round(np.rad2deg(np.arctan2(-6.0, 1.0)) % 360), round(np.rad2deg(np.arctan2(6.0, 1.0)))
    assert sorted(by_azimuth) == sorted([east, west])
    for azimuth, material in ((east, "tiles"), (west, "plaster")):
        expected = _reflection_factor(material, field.band_centers) / np.sqrt(37.0)
        np.testing.assert_allclose(by_azimuth[azimuth], expected, rtol=1e-5, err_msg=material)


def _four_node_layout(directory: Path, plan: FloorPlan) -> Path:
    """A layout stage of ``plan`` with four nodes at its corners (enough to pick sources from)."""
    positions = np.array([(1.0, 0.0, 1.0), (5.0, 0.0, 1.0), (1.0, 0.0, 4.0), (5.0, 0.0, 4.0)], dtype=np.float32)
    write_stage(
        directory,
        "layout",
        {"positions": positions},
        meta={"dataset": "tiny", "preset": "tiny", "sample_rate": FS},
        files={"floorplan.json": plan.to_json()},
    )
    return directory


@pytest.mark.parametrize("slot", [-1, 2])
def test_a_source_slot_out_of_range_is_refused_by_name(
    tmp_path: Path, single_room, monkeypatch: pytest.MonkeyPatch, slot: int
) -> None:
    """Two sources have slots 0 and 1: slot -1 is no alias for the last one, slot 2 no numpy index error;
    both are refused before anything is simulated."""

    def never(*args, **kwargs) -> None:
        raise AssertionError("simulated a source slot that does not exist")

    monkeypatch.setattr(bake, "simulate_source", never)
    directory = _four_node_layout(tmp_path / "scenes" / "tiny" / "hand", single_room)
    cfg = ExperimentConfig()
    cfg.acoustics.sources_per_scene = 2
    with pytest.raises(IndexError, match=rf"source slot {slot} out of range \(0\.\.1\)"):
        bake_source(directory, cfg, slot)


def test_a_bake_simulates_with_the_settings_it_records(
    tmp_path: Path, single_room, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every acoustics setting that keys the bake reaches the simulation, not the simulator's defaults
    (order 3, 3000 rays, 1 s, furniture on, 30000 images, which the default config happens to equal)."""
    seen: list[tuple[int, dict]] = []

    class Simulated(Exception):
        pass

    def record(plan, source, receivers, sample_rate, **kwargs) -> None:  # noqa: ANN001
        seen.append((sample_rate, kwargs))
        raise Simulated

    monkeypatch.setattr(bake, "simulate_source", record)
    directory = _four_node_layout(tmp_path / "scenes" / "tiny" / "hand", single_room)
    cfg = ExperimentConfig()
    ac = cfg.acoustics
    ac.ism_order, ac.rays, ac.max_rir_seconds, ac.furniture_obstacles, ac.max_image_sources = 2, 77, 0.5, False, 1234
    with pytest.raises(Simulated):
        bake_source(directory, cfg, 0)
    expected = {"ism_order": 2, "rays": 77, "max_seconds": 0.5, "furniture": False, "max_images": 1234}
    assert seen == [(FS, expected)]


def test_furniture_reflects_sound_off_its_top() -> None:
    """A 0.8 m sofa [0.5, 1.5] x [0.5, 1.2]: source (0.8, 1.5, 0.85) and receiver (1.2, 1.5, 0.85) above it
    hear its top through the image at y = 0.1, a sqrt(0.4^2 + 1.4^2) m path from 14 degrees below with the
    sofa's reflection factor (the top faces the air, not the inside of the box)."""
    plan = make_plan([(0, 0, 4, 4)], [], furniture=[(0.5, 0.5, 1.5, 1.2)])
    field = simulate_source(plan, np.array([0.8, 1.5, 0.85]), np.array([[1.2, 1.5, 0.85]]), FS, ism_order=1, rays=0)
    s = field.images(0)
    path = np.hypot(0.4, 1.4)
    hits = np.flatnonzero(np.abs(field.delay[s] - path / SPEED_OF_SOUND) < 1e-7)
    assert len(hits) == 1, "no reflection off the sofa's top"
    off_top = hits[0]
    expected = _reflection_factor("sofa", field.band_centers) / path
    np.testing.assert_allclose(field.band_amplitude[s][off_top], expected, rtol=1e-5)
    assert field.elevation[s][off_top] == pytest.approx(-np.rad2deg(np.arctan2(1.4, 0.4)))


@pytest.mark.parametrize("content", ["empty", "truncated", "overwritten", "incomplete"])
def test_an_unreadable_partial_source_file_is_named(tmp_path: Path, content: str) -> None:
    """An empty (EOFError), cut-off (BadZipFile), overwritten (a member's CRC fails) or incomplete per-source
    file of an interrupted bake is reported with its path and the repair, not as a bare numpy or zipfile error."""
    from asgf_nav.acoustics.bake import PARTIAL_KEYS

    partial = tmp_path / "acoustics_partial"
    partial.mkdir()
    path = partial / "source_000.npz"
    keys = PARTIAL_KEYS[:2] if content == "incomplete" else PARTIAL_KEYS
    np.savez(path, **{key: np.arange(4000, dtype=np.float32) for key in keys})
    data = path.read_bytes()
    if content == "overwritten":
        data = data[:3000] + bytes(64) + data[3064:]
    path.write_bytes({"empty": b"", "truncated": data[:40]}.get(content, data))
    with pytest.raises(SceneStoreError, match=r"source_000\.npz is unreadable .*delete it and bake again"):
        write_acoustics_stage(tmp_path, {"sample_rate": FS}, np.array([0]), partial)


def test_negative_receivers_and_ragged_batches_are_refused(baked_scene) -> None:
    """Receiver -1 is an error, not the last node's tail under an empty path list; a batch whose receivers,
    sources and yaws differ in length is refused, not cut to the shortest (leaving items unrendered)."""
    directory, _ = baked_scene
    rirs = SceneRirs(SceneStore(directory))
    node = int(rirs.source_nodes[0])
    with pytest.raises(IndexError, match="receiver -1 out of range"):
        rirs.rir(-1, node, 0)
    with pytest.raises(ValueError, match="got 2 receivers, 1 sources, 1 yaws"):
        rirs.rirs([0, 1], [node], [0])
    with pytest.raises(ValueError, match="got 1 receivers, 1 sources, 2 yaws"):
        rirs.rirs([0], [node], [0, 1])


@pytest.mark.parametrize("offsets", [(0, 4 * FS - 500), (4 * FS - 500, 0)])
def test_a_noise_offset_past_the_bank_is_refused_by_name(offsets: tuple[int, int]) -> None:
    """The bank holds 4 s of noise: a 1000-sample tail from 500 samples before its end, in either ear, is an
    error naming the bank, not a shape mismatch deep in numpy."""
    with pytest.raises(ValueError, match=r"noise bank of 64000 samples too short for 1000 \+ offset 63500"):
        render_late(np.full((7, 10), 1e-3), 0.004, FS, 1000, offsets)


def test_each_room_floor_reflects_with_its_own_material() -> None:
    """Room A has a wood floor, room B a tiled one: in each room the floor reflection (image 1.5 m below the
    floor, a sqrt(1 + 4 + 9) m path from (x, 1.5, 1) to (x + 1, 1.5, 3)) carries that room's floor material,
    though the doorway joins both floors into one polygon of free space."""
    plan = make_plan([(0, 0, 4, 4), (4.2, 0, 8.2, 4)], [(4.0, 1.5, 4.2, 2.5)])
    plan.rooms[1] = replace(plan.rooms[1], floor_material="tiles")
    for x, material in ((1.0, "wood"), (6.0, "tiles")):
        field = simulate_source(plan, at(x, 1.0), at(x + 1.0, 3.0)[None], FS, ism_order=1, rays=0)
        s = field.images(0)
        hits = np.flatnonzero(np.abs(field.delay[s] - np.sqrt(14.0) / SPEED_OF_SOUND) < 1e-7)
        assert len(hits) == 1, material
        expected = _reflection_factor(material, field.band_centers) / np.sqrt(14.0)
        np.testing.assert_allclose(field.band_amplitude[s][hits[0]], expected, rtol=1e-5, err_msg=material)


def test_direct_path_responses_keep_the_straight_sound_alone(baked_scene) -> None:
    """DirectPathRirs: where the straight path reaches the receiver, one coloured HRIR at its arrival, less than the
    full response; behind a wall, silence; on the source's node, the sound the renderer adds from above."""
    from asgf_nav.models.doa.rooms import has_direct_path

    directory, _ = baked_scene
    store = SceneStore(directory)
    full, direct = SceneRirs(store), DirectPathRirs(store)
    positions = np.asarray(store.array("positions"), dtype=float)
    seen = hidden = 0
    for node in full.source_nodes:
        for receiver in range(full.num_receivers):
            part, whole = direct.rir(receiver, int(node), 1), full.rir(receiver, int(node), 1)
            heard = np.flatnonzero(np.abs(part).sum(axis=1))
            if receiver != node and not has_direct_path(full, positions, receiver, int(node)):
                hidden += 1
                assert heard.size == 0, (receiver, node)
                continue
            seen += 1
            arrival = direct.direct_sample(receiver, int(node))
            # one band-coloured HRIR (its band filter spans up to the next power of two) from the arrival on
            assert heard.size and heard[0] >= arrival and heard[-1] < arrival + 2 * full.hrtf.num_taps, (receiver, node)
            assert (part.astype(float) ** 2).sum() < (whole.astype(float) ** 2).sum()  # reflections and tail gone
    assert seen > 10 and hidden > 0


def test_the_diffuse_field_gain_is_the_early_paths_band_energy_averaged_over_all_directions() -> None:
    """The tail is heard through the head the early paths are: a flat path rendered from every measured
    direction, its band energies averaged by solid angle, gives diffuse_field's gain (the KEMAR set's colour:
    about -11 dB at 125-500 Hz, +8 dB at 2 kHz)."""
    hrtf = load_hrtf(FS)
    bands = pra.acoustics.OctaveBandsFactory(fs=FS, base_frequency=125)
    n_bands, length = 7, 8192
    paths = EarlyPaths(np.zeros(1), np.zeros(1), np.zeros(1), np.ones((1, n_bands)))
    impulse = np.zeros(length)
    impulse[length // 2] = 1.0
    flat = np.array([np.sum(bands.analysis(impulse, band=b) ** 2) for b in range(n_bands)])
    energy, total = np.zeros((2, n_bands)), 0.0
    rings, counts = np.unique(hrtf.elevation, return_counts=True)
    for d in range(0, len(hrtf.azimuth), 3):  # every third direction: the average converges well before
        az, el = hrtf.azimuth[d], hrtf.elevation[d]
        ring = np.searchsorted(rings, el)
        weight = (np.sin(np.deg2rad(min(el + 5.0, 90.0))) - np.sin(np.deg2rad(el - 5.0))) / counts[ring]
        one = EarlyPaths(paths.delay + 0.1, np.array([-az]), np.array([el]), paths.band_amplitude)
        rir = render_early(one, [0.0], hrtf, band_centers(FS), length)[0]
        for ear in range(2):
            energy[ear] += weight * np.array([np.sum(bands.analysis(rir[:, ear], band=b) ** 2) for b in range(n_bands)])
        total += weight
    measured_db = 10 * np.log10(energy / total / flat)
    expected_db = 10 * np.log10(diffuse_field(hrtf, n_bands).gain)
    np.testing.assert_allclose(measured_db[:, 1:], expected_db[:, 1:], atol=1.5)  # 125 Hz: the HRIRs are short
    assert expected_db[0, 2] < -8 and expected_db[0, 4] > 6


def test_the_tail_takes_the_heads_gain_and_interaural_coherence_per_band() -> None:
    """One band of tail energy at a time: each ear's energy is the head's gain in that band, and the two ears'
    correlation its coherence (without the head: the same energy and independent ears)."""
    head = diffuse_field(load_hrtf(FS), 7)
    for b in range(1, 7):  # 125 Hz: too few independent samples in 1 s for a tight correlation
        energy = np.zeros((7, 250))
        energy[b] = 1e-3
        flat = render_late(energy, 0.004, FS, FS, (100, 20000)).astype(np.float64)
        heard = render_late(energy, 0.004, FS, FS, (100, 20000), head=head).astype(np.float64)
        for ear in range(2):
            gain_db = 10 * np.log10(np.sum(heard[:, ear] ** 2) / np.sum(flat[:, ear] ** 2))
            assert gain_db == pytest.approx(10 * np.log10(head.gain[ear, b]), abs=0.5), (b, ear)
        correlation = lambda x: np.sum(x[:, 0] * x[:, 1]) / np.sqrt(np.sum(x[:, 0] ** 2) * np.sum(x[:, 1] ** 2))  # noqa: E731
        assert correlation(heard) == pytest.approx(head.coherence[b], abs=0.1), b
        assert abs(correlation(flat)) < 0.1, b  # without the head the ears' noise is independent
    assert head.coherence[1] > 0.4 and abs(head.coherence[4]) < 0.1  # 250 Hz alike at both ears; 2 kHz not


def test_responses_too_short_for_the_farthest_source_are_refused_before_anything_is_baked(tmp_path, two_rooms):
    """A source farther than ``acoustics.max_rir_seconds`` of travel would render as silence at those nodes (the
    response is cut before its direct sound arrives): the bake refuses the setting by name instead of baking
    scenes a run would train on deaf."""
    from asgf_nav.config import ConfigError

    directory = tmp_path / "scenes" / "tiny" / "hand"
    nodes = np.asarray([(0.5, 0.0, 0.5), (4.0, 0.0, 2.0), (7.5, 0.0, 3.5)], dtype=np.float32)  # 7.6 m corner to corner
    meta = {"dataset": "tiny", "preset": "tiny", "sample_rate": FS}
    write_stage(directory, "layout", {"positions": nodes}, meta=meta, files={"floorplan.json": two_rooms.to_json()})
    cfg = ExperimentConfig()
    cfg.acoustics.sources_per_scene, cfg.acoustics.rays, cfg.acoustics.max_rir_seconds = 3, 300, 0.02
    longest = np.linalg.norm(nodes[0] - nodes[2]) / SPEED_OF_SOUND  # 0.022 s
    with pytest.raises(ConfigError, match=rf"'acoustics.max_rir_seconds': 0.02 s .* scene hand \({longest:.3f} s over"):
        bake_acoustics(directory, cfg)
    assert not (directory / "acoustics_partial").exists()
    bake.check_response_length("hand", nodes, np.arange(3), longest * 1.01)  # long enough: no refusal


def test_the_diffuse_field_cache_keeps_a_bounded_number_of_head_sets() -> None:
    """Keyed on the set's identity, and load_hrtf keeps four rates: a process that went through more rates than
    that (scenes and DoA rooms at several) added an entry for every set loaded again, and kept each set alive."""
    import dataclasses

    from asgf_nav.acoustics import binaural

    kemar = load_hrtf(FS)
    first = diffuse_field(kemar, 7)
    copies = [dataclasses.replace(kemar, _spectra={}) for _ in range(3 * binaural._DIFFUSE_CACHE_SIZE)]
    for copy in copies:  # what load_hrtf gives for a rate it dropped and loads again: the same data, a new set
        assert diffuse_field(copy, 7) is not first
        assert diffuse_field(kemar, 7) is first  # in use all along: kept
    assert len(binaural._DIFFUSE_CACHE) <= binaural._DIFFUSE_CACHE_SIZE
    np.testing.assert_array_equal(diffuse_field(copies[-1], 7).gain, first.gain)
