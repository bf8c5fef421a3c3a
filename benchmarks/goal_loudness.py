"""Is the goal node the loudest place around the sound? Rendered responses at each source node and its
neighbours, with and without the direct sound the renderer adds on the source's own node.

The acoustic simulation gives a receiver standing on the source's node no direct path (a zero-length
path has no level and no direction), so the goal could sound quieter than a neighbour one grid step
away, and loudness stopped rising on the last step to the goal. ``SceneRirs`` now adds a direct path
from ``rir.AT_SOURCE_DISTANCE`` straight above (``RENDER_VERSION`` 3). For every source node of each
scene this prints how often the goal's response energy (mean over the four yaws) falls below that of its
loudest graph neighbour, both ways, measured side by side in one run. It takes seconds per scene.

    python benchmarks/goal_loudness.py DATA/scenes/replica/frl_apartment_5 DATA/scenes/replica/room_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from asgf_nav.acoustics.binaural import noise_offsets, render_early, render_late
from asgf_nav.acoustics.rir import NUM_YAWS, YAW_STEP_DEG, SceneRirs
from asgf_nav.cli import run_script
from asgf_nav.scenes.store import SceneStore


def response_energy(rirs: SceneRirs, receiver: int, source: int) -> float:
    """Energy of the rendered response, averaged over the four yaws."""
    return float((rirs.rirs([receiver] * NUM_YAWS, [source] * NUM_YAWS, range(NUM_YAWS)) ** 2).sum() / NUM_YAWS)


def energy_without_at_source_path(rirs: SceneRirs, source: int) -> float:
    """The source node's response energy as rendered before ``RENDER_VERSION`` 3: the simulated paths
    alone, the late tail from time 0 (heard through the head as now, so that only the at-source path differs)."""
    yaws = np.arange(NUM_YAWS) * YAW_STEP_DEG
    out = render_early(rirs.baked_paths(source, source), yaws, rirs.hrtf, rirs.band_centers, rirs.length)
    energy = rirs.late_energy(source, source)
    for k in range(NUM_YAWS):
        offsets = noise_offsets(source, source, k, rirs._noise_span())
        out[k] += render_late(energy, rirs.hist_bin_seconds, rirs.sample_rate, rirs.length, offsets, 0, rirs.diffuse)
    return float((out.astype(np.float64) ** 2).sum() / NUM_YAWS)


def measure(scene_dir: Path) -> dict[str, np.ndarray]:
    """Per source node: the goal's energy with and without the at-source path and its loudest
    neighbour's, in dB."""
    store = SceneStore(scene_dir)
    rirs, neighbors = SceneRirs(store), np.asarray(store.array("neighbors"))
    goal_db, old_goal_db, neighbour_db = [], [], []
    for source in map(int, rirs.source_nodes):
        near = [int(n) for n in neighbors[source] if n >= 0]
        if not near:
            continue
        goal_db.append(10 * np.log10(response_energy(rirs, source, source)))
        old_goal_db.append(10 * np.log10(energy_without_at_source_path(rirs, source)))
        neighbour_db.append(10 * np.log10(max(response_energy(rirs, n, source) for n in near)))
    return {"goal": np.array(goal_db), "old_goal": np.array(old_goal_db), "neighbour": np.array(neighbour_db)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene_dirs", type=Path, nargs="+", help="baked scenes (layout + acoustics)")
    args = parser.parse_args(argv)
    labels = {"old_goal": "simulated paths only (RENDER_VERSION 2)", "goal": "rendered now"}
    margins: dict[str, list[np.ndarray]] = {way: [] for way in labels}
    for scene_dir in args.scene_dirs:
        found = measure(scene_dir)
        for way, label in labels.items():
            margin = found[way] - found["neighbour"]
            margins[way].append(margin)
            print(f"{scene_dir.name}, {label}: {_describe(margin)}")
    if len(args.scene_dirs) > 1:  # the figures docs/acoustics.md quotes are over all the scenes
        for way, label in labels.items():
            print(f"all {len(args.scene_dirs)} scenes, {label}: {_describe(np.concatenate(margins[way]))}")
    return 0


def _describe(margin: np.ndarray) -> str:
    """Goal level minus its loudest neighbour's, over sources (dB)."""
    return (
        f"goal quieter than its loudest neighbour at {(margin < 0).sum()} of {len(margin)} sources; goal minus "
        f"loudest neighbour median {np.median(margin):+.1f} dB, min {margin.min():+.1f} dB"
    )


if __name__ == "__main__":
    run_script(main)
