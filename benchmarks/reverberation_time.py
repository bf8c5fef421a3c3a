"""Reverberation time of the baked responses against Sabine, Eyring and pyroomacoustics with scattering.

The bake traces rays specularly (``simulate._ray_trace``: diffuse rain is 60x slower on a whole apartment),
so nothing mixes the rays' directions and the energy of grazing rays between weakly absorbing surfaces
lingers. This measures what that does in one empty shoebox room with the scene generator's materials:
T20 per octave band of the project's energy response (image-source paths plus the ray-traced tail, as
``simulate_source`` returns them), of pyroomacoustics' hybrid simulator with the materials' scattering,
and the Sabine and Eyring estimates of the room. One receiver, so seconds on one core. With
``--scene-dir`` it traces a baked scene's first source instead, both ways with the bake's own settings, to
three receivers 1.5-5 m away in the source's room, and also prints the late energy within the stored
response (dB); that runs in seconds.

    python benchmarks/reverberation_time.py
    python benchmarks/reverberation_time.py --walls brick_red --floor carpet_grey --ceiling ceiling_tiles
    python benchmarks/reverberation_time.py --scene-dir DATA/scenes/replica/frl_apartment_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
from shapely.geometry import Point

from asgf_nav.acoustics.bake import _ears
from asgf_nav.acoustics.simulate import (
    HIST_BIN_SECONDS,
    RECEIVER_RADIUS,
    _band_values,
    _polygons,
    band_centers,
    build_walls,
    effective_ism_order,
    simulate_source,
)
from asgf_nav.cli import positive_float, positive_int, run_script
from asgf_nav.scenes.floorplan import Box, FloorPlan, Room
from asgf_nav.scenes.furnish import MATERIALS
from asgf_nav.scenes.scene import FLOORPLAN_FILE
from asgf_nav.scenes.store import SceneStore

EAR_HEIGHT = 1.5
# the shoebox room's options and their defaults: --scene-dir traces with the bake's own settings instead
ROOM_DEFAULTS = {
    "size": (6.0, 5.0, 2.6),
    "walls": "paint_white",
    "floor": "wood_floor",
    "ceiling": "ceiling_plaster",
    "rays": 20000,
    "sample_rate": 16000,
}


def shoebox(width: float, depth: float, height: float, walls: str, floor: str, ceiling: str) -> FloorPlan:
    room = Room("room", "living", 0.0, 0.0, width, depth, floor, walls)
    t = 0.2
    boxes = [
        Box(-t, -t, width + t, 0.0, 0.0, height, walls),
        Box(-t, depth, width + t, depth + t, 0.0, height, walls),
        Box(-t, 0.0, 0.0, depth, 0.0, height, walls),
        Box(width, 0.0, width + t, depth, 0.0, height, walls),
    ]
    return FloorPlan("shoebox", "room", 0, height, ceiling, [room], boxes, [], [], dict(MATERIALS))


def t20(energy_per_bin: np.ndarray, bin_seconds: float) -> float:
    """Decay time from the -5..-25 dB stretch of the Schroeder curve, extrapolated to 60 dB."""
    curve = np.cumsum(energy_per_bin[::-1])[::-1]
    level = 10 * np.log10(curve / curve[0] + 1e-30)
    t = np.arange(len(level)) * bin_seconds
    fit = (level <= -5) & (level >= -25)
    return float(-60.0 / np.polyfit(t[fit], level[fit], 1)[0])


def project_t20(plan: FloorPlan, source, receiver, sample_rate: int, rays: int, seconds: float) -> list[float]:
    field = simulate_source(plan, source, receiver[None], sample_rate, ism_order=3, rays=rays, max_seconds=seconds)
    paths = field.images(0)
    times = []
    for band in range(len(field.band_centers)):
        energy = field.histogram[0, band].copy()
        for delay, amplitude in zip(field.delay[paths], field.band_amplitude[paths][:, band]):
            if int(delay / HIST_BIN_SECONDS) < len(energy):
                energy[int(delay / HIST_BIN_SECONDS)] += amplitude**2
        times.append(t20(energy, HIST_BIN_SECONDS))
    return times


def scattering_t20(plan: FloorPlan, source, receiver, sample_rate: int, rays: int, seconds: float) -> list[float]:
    pra.constants.set("rir_hpf_enable", False)
    pra.random.seed(0)
    room = pra.Room(build_walls(plan, sample_rate, scattering=True), fs=sample_rate, max_order=3, air_absorption=False)
    room.set_ray_tracing(n_rays=rays, receiver_radius=0.5, hist_bin_size=HIST_BIN_SECONDS, time_thres=seconds)
    room.add_source(source[[0, 2, 1]])
    room.add_microphone(receiver[[0, 2, 1]])
    room.compute_rir()
    bands = pra.acoustics.OctaveBandsFactory(fs=sample_rate, base_frequency=125)
    rir = room.rir[0][0]
    return [t20(bands.analysis(rir, band=b) ** 2, 1.0 / sample_rate) for b in range(len(band_centers(sample_rate)))]


def room_estimates(plan: FloorPlan, width: float, depth: float, height: float, sample_rate: int):
    """Sabine and Eyring T60 per band from the surfaces' areas and absorption."""
    centers = band_centers(sample_rate)
    room = plan.rooms[0]
    absorption = lambda name: np.clip(_band_values(MATERIALS[name].absorption, centers), 0.0, 0.99)  # noqa: E731
    surfaces = [
        (room.wall_material, 2 * (width + depth) * height),
        (room.floor_material, width * depth),
        (plan.ceiling_material, width * depth),
    ]
    total = sum(area for _, area in surfaces)
    sabin = sum(area * absorption(name) for name, area in surfaces)
    volume = width * depth * height
    return 0.161 * volume / sabin, 0.161 * volume / (-total * np.log(1.0 - sabin / total))


def scene_tails(scene_dir: Path, receivers: int = 3) -> None:
    """T20 and late energy of a baked scene's first source, traced specular (as baked) and with scattering."""
    store = SceneStore(scene_dir)
    plan = FloorPlan.load(scene_dir / FLOORPLAN_FILE)
    baked = store.meta("acoustics")
    rate = int(baked["sample_rate"])
    ears = _ears(np.asarray(store.array("positions")), float(baked["ear_height"]), plan.ceiling_height)
    source_node = int(store.array("acoustic_source_nodes")[0])
    source = ears[source_node]
    room = next(r for r in plan.rooms if r.x0 <= source[0] <= r.x1 and r.z0 <= source[2] <= r.z1)
    distance = np.linalg.norm(ears - source, axis=1)
    inside = (ears[:, 0] >= room.x0) & (ears[:, 0] <= room.x1) & (ears[:, 2] >= room.z0) & (ears[:, 2] <= room.z1)
    chosen = np.flatnonzero(inside & (distance > 1.5) & (distance < 5.0))[:receivers]
    region = next(
        g for g in _polygons(plan.free_space_polygon()) if g.buffer(1e-6).contains(Point(source[0], source[2]))
    )
    order = effective_ism_order(len(build_walls(plan, rate, region=region)), baked["ism_order"], baked["max_images"])
    print(f"{scene_dir.name}: source node {source_node} in {room.name}, receivers {chosen.tolist()} "
          f"({', '.join(f'{d:.1f}' for d in distance[chosen])} m), {baked['rays']} rays, {rate} Hz")  # fmt: skip
    print(f"{'T20 (s), band (Hz)':34s}" + "".join(f"{c:>7.0f}" for c in band_centers(rate)) + "   late energy (dB)")
    late_db: dict[bool, list[float]] = {False: [], True: []}
    for scattering in (False, True):
        pra.random.seed(source_node)
        walls = build_walls(plan, rate, region=region, scattering=scattering)
        # the tracer logs from max_order bounces on: one past the image sources', as the bake traces
        traced = pra.Room(walls, fs=rate, max_order=order + 1, air_absorption=False)
        traced.set_ray_tracing(
            n_rays=int(baked["rays"]), receiver_radius=RECEIVER_RADIUS, hist_bin_size=HIST_BIN_SECONDS,
            energy_thres=1e-7, time_thres=float(baked["max_rir_seconds"]),
        )  # fmt: skip
        traced.sources.append(pra.SoundSource(source[[0, 2, 1]]))
        traced.add_microphone_array(pra.MicrophoneArray(ears[chosen][:, [0, 2, 1]].T, rate))
        traced.ray_tracing()
        for i, node in enumerate(chosen):
            histogram = np.asarray(traced.rt_histograms[i][0][0], dtype=np.float64)  # (bands, bins)
            times = [t20(band, HIST_BIN_SECONDS) for band in histogram]
            label = f"{'scattering' if scattering else 'specular (baked)'}, node {node}"
            energy = 10 * np.log10(histogram.sum(axis=1).mean())
            late_db[scattering].append(energy)
            print(f"{label:34s}" + "".join(f"{t:7.2f}" for t in times) + f"   {energy:8.1f}")
    differences = ", ".join(f"node {n}: {a - b:+.1f}" for n, a, b in zip(chosen, late_db[False], late_db[True]))
    print(f"late energy, specular (baked) minus scattering, dB: {differences}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the room's defaults are filled in after parsing, so that an option given with --scene-dir is seen
    room = "the shoebox room only (default: %s)"
    parser.add_argument("--size", type=positive_float, nargs=3, metavar=("W", "D", "H"), help=room % "6 5 2.6 m")
    parser.add_argument("--walls", choices=sorted(MATERIALS), help=room % ROOM_DEFAULTS["walls"])
    parser.add_argument("--floor", choices=sorted(MATERIALS), help=room % ROOM_DEFAULTS["floor"])
    parser.add_argument("--ceiling", choices=sorted(MATERIALS), help=room % ROOM_DEFAULTS["ceiling"])
    parser.add_argument("--rays", type=positive_int, help=room % "20000 rays for both tracers; the bake uses 3000")
    parser.add_argument("--sample-rate", type=positive_int, help=room % "16000 Hz")
    parser.add_argument("--scene-dir", type=Path, help="a baked scene (layout and acoustics) instead of the room")
    args = parser.parse_args()
    if args.scene_dir is not None:
        given = ["--" + name.replace("_", "-") for name in ROOM_DEFAULTS if getattr(args, name) is not None]
        if given:
            parser.error(
                f"{', '.join(given)}: not used with --scene-dir, which traces with the bake's own settings "
                "(they set the shoebox room)"
            )
        scene_tails(args.scene_dir)
        return
    for name, default in ROOM_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    width, depth, height = args.size
    plan = shoebox(width, depth, height, args.walls, args.floor, args.ceiling)
    source = np.array([1.5, EAR_HEIGHT, 1.2])
    receiver = np.array([width - 1.8, EAR_HEIGHT, depth - 1.4])
    seconds = 3.0
    rows = {
        "project (specular tracer)": project_t20(plan, source, receiver, args.sample_rate, args.rays, seconds),
        "pyroomacoustics, scattering": scattering_t20(plan, source, receiver, args.sample_rate, args.rays, seconds),
    }
    sabine, eyring = room_estimates(plan, width, depth, height, args.sample_rate)
    rows["Sabine"], rows["Eyring"] = list(sabine), list(eyring)
    centers = band_centers(args.sample_rate)
    print(f"T20 / T60 (s), {width} x {depth} x {height} m, walls {args.walls}, floor {args.floor}, "
          f"ceiling {args.ceiling}, {args.rays} rays")  # fmt: skip
    print(f"{'band (Hz)':30s}" + "".join(f"{c:>8.0f}" for c in centers))
    for name, values in rows.items():
        print(f"{name:30s}" + "".join(f"{v:8.2f}" for v in values))
    ratio = np.array(rows["project (specular tracer)"]) / np.array(rows["Eyring"])
    print(f"{'project / Eyring':30s}" + "".join(f"{v:8.2f}" for v in ratio))


if __name__ == "__main__":
    run_script(main)
