"""Top-down trajectory maps: floor plan, navigation graph, shortest path, the agent's path coloured by time.

The map uses :func:`asgf_nav.viz.floorplan_plot.draw_floorplan` (x right, z down, so yaw 0 points up).
The agent's path runs from dark (start) to light (end) along the ``magma`` colour map; small arrows mark
its heading where it turned and at the start and the end; the shortest path is the oracle's route.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from asgf_nav.eval.evaluator import EpisodeRecord
from asgf_nav.io import atomic_savefig
from asgf_nav.scenes.scene import Scene
from asgf_nav.tasks.navigation import oracle_plan, step_pose

# the path's colour by time: magma without its palest tenth, which vanishes on a light floor; the path, its
# heading arrows, the agent and the colour bar all read this one map
PATH_CMAP = matplotlib.colors.ListedColormap(matplotlib.colormaps["magma"](np.linspace(0.0, 0.85, 256)), "magma_path")
HEADING_ARROW_GRID_SHARE = 0.35  # of the grid step: the arrow stays off the next node and inside the walls
SHORTEST_COLOR = "#2ca02c"
GOAL_COLOR = "#d62728"


def heading_vector(yaw_index: int) -> tuple[float, float]:
    """(dx, dz) of yaw 90*k degrees in the map (yaw 0 faces -Z, yaw 90 faces -X)."""
    theta = math.radians(90.0 * yaw_index)
    return -math.sin(theta), -math.cos(theta)


def shortest_path_nodes(scene: Scene, start: int, yaw: int, goal: int) -> list[int]:
    """Nodes visited by the oracle's fewest-action shortest path from (start, yaw) to ``goal``."""
    neighbors = np.asarray(scene.neighbors)
    hops = np.asarray(scene.geodesic_hops[:, goal])
    nodes, node = [start], start
    for action in oracle_plan(neighbors, hops, start, yaw):
        node, yaw, _ = step_pose(neighbors, node, yaw, action)
        if node != nodes[-1]:
            nodes.append(node)
    return nodes


def _grid_step(positions: np.ndarray, neighbors: np.ndarray) -> float:
    """The graph's typical edge length in the map (its grid size; an imported graph has no single one)."""
    src, k = np.nonzero(neighbors >= 0)
    if src.size == 0:
        return 1.0
    lengths = np.linalg.norm(positions[src][:, [0, 2]] - positions[neighbors[src, k]][:, [0, 2]], axis=1)
    return float(np.median(lengths))


def draw_episode(
    ax: Axes,
    scene: Scene,
    record: EpisodeRecord,
    title: str | None = None,
    upto: int | None = None,
    show_graph: bool = True,
    colorbar: bool = False,
) -> Axes:
    """Draw one episode on ``ax``; ``upto`` limits the agent's path to its first poses (video frames)."""
    from asgf_nav.viz.floorplan_plot import draw_floorplan

    positions = np.asarray(scene.positions, dtype=np.float64)
    draw_floorplan(
        ax,
        scene.floorplan,
        positions if show_graph else None,
        np.asarray(scene.neighbors) if show_graph else None,
        room_labels=False,
    )
    shortest = positions[shortest_path_nodes(scene, record.start_node, record.start_yaw, record.goal_node)]
    ax.plot(
        shortest[:, 0],
        shortest[:, 2],
        "-",
        color=SHORTEST_COLOR,
        lw=6.0,
        alpha=0.45,
        zorder=8,
        solid_capstyle="round",
        label="shortest path",
    )
    poses = np.asarray(record.path if upto is None else record.path[: max(1, upto)], dtype=np.int64)
    xz = positions[poses[:, 0]][:, [0, 2]]
    steps = len(record.path) - 1
    if len(xz) > 1:
        segments = np.stack([xz[:-1], xz[1:]], axis=1)
        keep = np.any(segments[:, 0] != segments[:, 1], axis=1)
        t = np.arange(len(segments)) / max(1, steps - 1)
        lines = LineCollection(segments[keep], cmap=PATH_CMAP, norm=Normalize(0, 1), linewidths=2.8, zorder=9)
        lines.set_array(t[keep])
        ax.add_collection(lines)
        if colorbar:
            cb = ax.figure.colorbar(lines, ax=ax, fraction=0.035, pad=0.02)
            cb.set_label("share of the episode (start -> end)")
    turns = [0, len(poses) - 1] + [i for i in range(1, len(poses)) if poses[i, 1] != poses[i - 1, 1]]
    cmap = PATH_CMAP
    arrow = HEADING_ARROW_GRID_SHARE * _grid_step(positions, np.asarray(scene.neighbors))
    for i in sorted(set(turns)):
        dx, dz = heading_vector(int(poses[i, 1]))
        color = cmap(i / max(1, steps))
        ax.annotate(
            "",
            xy=(xz[i, 0] + arrow * dx, xz[i, 1] + arrow * dz),
            xytext=(xz[i, 0], xz[i, 1]),
            zorder=11,
            arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2, "mutation_scale": 9},
        )
    start = positions[record.start_node]
    goal = positions[record.goal_node]
    ax.scatter([start[0]], [start[2]], s=90, marker="o", color="#1f77b4", edgecolor="white", zorder=12, label="start")
    ax.scatter(
        [goal[0]], [goal[2]], s=260, marker="*", color=GOAL_COLOR, edgecolor="white", zorder=13, label="goal (sound)"
    )
    # above the goal star and hollow: an agent that stopped on the goal is seen there, and so is the goal
    ax.scatter(
        [xz[-1, 0]], [xz[-1, 1]], s=90, marker="s", facecolor="none", edgecolor="black", linewidths=1.6, zorder=14,
        label="agent",
    )  # fmt: skip
    ax.plot([], [], marker=">", linestyle="none", color=cmap(0.5), markersize=6, label="heading (start, turns, end)")
    if title is None:
        m = record.metrics
        title = (
            f"{scene.name} ep {record.episode_id} ({record.sound}): "
            f"{'success' if m.get('success') else 'failure'}, SPL {m.get('spl', 0):.2f}, {steps} actions"
        )
    ax.set_title(title, fontsize=9)
    return ax


def trajectory_figure(scene: Scene, records: Sequence[EpisodeRecord], labels: Sequence[str]) -> Figure:
    """One panel per record (side by side; e.g. two agents on the same episode) with a shared legend."""
    if len(records) != len(labels):
        raise ValueError(f"{len(records)} records but {len(labels)} labels")
    x0, z0, x1, z1 = scene.floorplan.bounds
    aspect = (z1 - z0 + 0.6) / max(x1 - x0 + 0.6, 1e-6)
    width = 5.2
    map_width = width - 1.1  # what the colour bar beside each map leaves to it
    fig = Figure(figsize=(width * len(records) + 0.6, map_width * aspect + 1.6))  # its height is set below
    axes = fig.subplots(1, len(records), squeeze=False)
    for ax, rec, label in zip(axes[0], records, labels):
        m = rec.metrics
        title = (
            f"{label}: {'success' if m.get('success') else 'failure'}, SPL {m.get('spl', 0):.2f}, "
            f"{len(rec.actions)} actions"
        )
        draw_episode(ax, scene, rec, title=title, colorbar=True)  # a bar beside each map: the panels keep one size
    handles, names = axes[0][0].get_legend_handles_labels()
    first = records[0]
    one_panel = len(records) == 1  # too narrow for the title on one line
    fig.suptitle(
        f"{scene.dataset}/{scene.name}, episode {first.episode_id}{chr(10) if one_panel else ', '}"
        f"sound '{first.sound}', geodesic distance {first.geodesic_distance:.1f} m",
        fontsize=10,
    )
    columns = min(len(names), 3) if one_panel else len(names)  # one panel: the legend in rows, inside the figure
    fig.legend(handles, names, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    # bands of fixed height in inches for the title (above) and the legend (below), whatever the plan's shape:
    # as shares of the figure's height they were too thin under a wide plan, and the legend sat on "x (m)"
    legend_band = 0.08 + 0.22 * -(-len(names) // columns)
    title_band = 0.5 if one_panel else 0.35
    height = map_width * aspect + 1.1 + legend_band + title_band  # 1.1: the panel's own title and axis labels
    fig.set_size_inches(fig.get_figwidth(), height)
    fig.tight_layout(rect=(0, legend_band / height, 1, 1 - title_band / height))
    return fig


def save_trajectories(
    path: str | Path, scene: Scene, records: Sequence[EpisodeRecord], labels: Sequence[str], dpi: int = 130
) -> Path:
    fig = trajectory_figure(scene, records, labels)
    return atomic_savefig(fig, path, dpi=dpi)
