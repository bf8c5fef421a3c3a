"""How close to walls and furniture do the sound sources stand, against all navigable nodes?

SoundSpaces can put the goal on any node. The embedded scenes hold responses from
``acoustics.sources_per_scene`` nodes only, spread over the plan as ``acoustics.source_spread`` says
(``acoustics.bake.select_source_nodes``), and episode goals are drawn from them. Farthest-point sampling,
the default, favours the edges of a plan, so this prints, per scene set and spread, the median clearance
(distance from the node to the nearest wall or piece of furniture) of the source nodes and of all nodes,
and the share of each within 0.3 m. It reads the generated plans only (nothing is baked) and takes
seconds per scene set.

    python benchmarks/source_clearance.py --datasets replica mp3d
"""

from __future__ import annotations

import argparse

import numpy as np

from asgf_nav.acoustics.bake import SOURCE_SPREADS, select_source_nodes
from asgf_nav.cli import run_script
from asgf_nav.config import ExperimentConfig
from asgf_nav.scenes.generator import generate_floorplan
from asgf_nav.scenes.navgraph import build_navgraph, point_rect_distance, solid_rects
from asgf_nav.scenes.presets import PRESETS, get_preset

NEAR_WALL_M = 0.3


def clearances(dataset: str, sources_per_scene: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Clearance (m) of every scene's source nodes, by spread, and of all its nodes, over the dataset's scenes."""
    preset = get_preset(dataset)
    sources: dict[str, list[np.ndarray]] = {spread: [] for spread in SOURCE_SPREADS}
    nodes = []
    for spec in preset.specs:
        plan = generate_floorplan(dataset, spec.name)
        graph = build_navgraph(plan, preset.grid_size)
        clearance = point_rect_distance(graph.positions[:, [0, 2]].astype(np.float64), solid_rects(plan)).min(axis=1)
        for spread, chosen in sources.items():
            chosen.append(clearance[select_source_nodes(graph.positions, sources_per_scene, spread)])
        nodes.append(clearance)
    return {spread: np.concatenate(chosen) for spread, chosen in sources.items()}, np.concatenate(nodes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["replica", "mp3d"], choices=sorted(PRESETS))
    parser.add_argument(
        "--sources-per-scene", type=int, default=ExperimentConfig().acoustics.sources_per_scene,
        help="source nodes per scene, as acoustics.sources_per_scene (default: the config default)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.sources_per_scene < 1:
        parser.error(f"--sources-per-scene must be at least 1, got {args.sources_per_scene}")
    print(
        f"| scene set | source_spread | source nodes | median clearance: sources / all | "
        f"within {NEAR_WALL_M} m: sources / all |"
    )
    print("|---|---|---|---|---|")
    for dataset in args.datasets:
        by_spread, nodes = clearances(dataset, args.sources_per_scene)
        for spread, sources in by_spread.items():
            print(
                f"| {dataset} | {spread} | {len(sources)} of {len(nodes)} | "
                f"{np.median(sources):.2f} / {np.median(nodes):.2f} m | "
                f"{100 * np.mean(sources < NEAR_WALL_M):.0f} / {100 * np.mean(nodes < NEAR_WALL_M):.0f} % |"
            )


if __name__ == "__main__":
    run_script(main)
