"""One-page scene overview: top-down floor plan with the navigation graph, and egocentric RGB-D views."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from asgf_nav.io import atomic_savefig
from asgf_nav.scenes.floorplan import yaw_forward
from asgf_nav.scenes.scene import YAWS, Scene
from asgf_nav.viz.floorplan_plot import draw_floorplan

logger = logging.getLogger(__name__)


def pick_views(scene: Scene, count: int = 4) -> list[tuple[int, int]]:
    """(node, yaw index) pairs: the node nearest each room's centre, largest rooms first, looking the way
    with the most depth; where the rooms give fewer than ``count``, random other nodes (seeded), likewise."""
    pos = np.asarray(scene.positions)[:, [0, 2]]
    rooms = sorted(scene.floorplan.rooms, key=lambda r: -r.area)
    picks: list[tuple[int, int]] = []
    depth = np.asarray(scene.depth)
    for room in rooms:
        if len(picks) == count:
            break
        centre = np.array([(room.x0 + room.x1) / 2, (room.z0 + room.z1) / 2])
        node = int(np.argmin(np.linalg.norm(pos - centre, axis=1)))
        if any(node == p[0] for p in picks):
            continue
        yaw_index = int(np.argmax(depth[node].astype(np.float32).mean(axis=(1, 2))))
        picks.append((node, yaw_index))
    rng = np.random.default_rng(0)
    while len(picks) < min(count, scene.num_nodes):
        node = int(rng.integers(scene.num_nodes))
        if all(node != p[0] for p in picks):  # looking the deepest way too (a view of a wall shows nothing)
            means = depth[node].astype(np.float32).mean(axis=(1, 2))
            picks.append((node, int(rng.choice(np.flatnonzero(means == means.max())))))  # ties: any of them
    return picks


def make_scene_sheet(scene: Scene, out_path: str | Path, num_views: int = 4, max_depth: float | None = None) -> Path:
    """Write a PNG with the floor plan + graph (views marked) and RGB / depth rows of ``num_views`` views.
    Depth is coloured from 0 to ``max_depth``, by default the deepest of the views shown rounded up to a
    metre: the sensor's 10 m range would leave a room a few metres across in one colour."""
    views = pick_views(scene, num_views)
    if max_depth is None:
        deepest = max(float(np.asarray(scene.depth[node, k], dtype=np.float32).max()) for node, k in views)
        max_depth = float(max(1.0, np.ceil(deepest)))
    plan = scene.floorplan
    x0, z0, x1, z1 = plan.bounds
    row_height = 1.9
    height = row_height * len(views) + 0.6
    map_width = float(np.clip(height * (x1 - x0) / max(z1 - z0, 1e-6), 4.0, 14.0))
    fig = Figure(figsize=(map_width + 2 * row_height + 0.4, height), dpi=110)
    grid = fig.add_gridspec(len(views), 3, width_ratios=[map_width, row_height, row_height])
    ax_map = fig.add_subplot(grid[:, 0])
    draw_floorplan(ax_map, plan, scene.positions, scene.neighbors)
    area = plan.floor_area
    ax_map.set_title(
        f"{scene.dataset}/{scene.name}: {plan.kind}, {len(plan.rooms)} room{'s' if len(plan.rooms) != 1 else ''}, "
        f"{area:.0f} m$^2$, "
        f"{scene.num_nodes} nodes ({scene.grid_size} m grid)",
        fontsize=9,
    )
    for i, (node, k) in enumerate(views):
        p = scene.positions[node]
        # 0.8 m, or less where the view faces a wall: the arrow stays in the room it looks across (a depth of
        # 0 is a ray that hit nothing, as far as can be)
        ahead = np.asarray(scene.depth[node, k], dtype=np.float32)
        centre = float(ahead[ahead.shape[0] // 2, ahead.shape[1] // 2])
        d = yaw_forward(YAWS[k]) * (min(0.8, 0.8 * centre) if centre > 0 else 0.8)
        ax_map.annotate(
            "", xy=(p[0] + d[0], p[2] + d[1]), xytext=(p[0], p[2]),
            arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 2}, zorder=8,
            annotation_clip=False,  # a tip past the axes (a view near the map's edge) would drop the whole arrow
        )  # fmt: skip
        ax_map.text(
            p[0],
            p[2],
            str(i + 1),
            color="white",
            fontsize=7,
            ha="center",
            va="center",
            zorder=9,
            bbox={"boxstyle": "circle,pad=0.15", "facecolor": "crimson", "linewidth": 0},
        )
        ax_rgb = fig.add_subplot(grid[i, 1])
        ax_rgb.imshow(scene.rgb[node, k])
        ax_rgb.set_title(f"{i + 1}: node {node}, yaw {YAWS[k]}: RGB", fontsize=7)
        ax_depth = fig.add_subplot(grid[i, 2])
        ax_depth.imshow(np.asarray(scene.depth[node, k], dtype=np.float32), cmap="viridis", vmin=0, vmax=max_depth)
        ax_depth.set_title(f"depth (0-{max_depth:g} m)", fontsize=7)
        for ax in (ax_rgb, ax_depth):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out_path = atomic_savefig(fig, out_path, bbox_inches="tight")
    logger.info("scene sheet written to %s", out_path)
    return out_path
