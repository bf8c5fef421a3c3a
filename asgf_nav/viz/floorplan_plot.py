"""Top-down floor-plan drawing (matplotlib), reused for scene sheets and trajectory maps.

The map is drawn in habitat coordinates: x to the right, z downwards (so yaw 0, facing -Z, points up).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

from asgf_nav.scenes.floorplan import FloorPlan

WALL_COLOR = "#2b2b2b"
DOORWAY_COLOR = "#f2c14e"
GRAPH_COLOR = "#3a7bd5"


def _rect(x0: float, z0: float, x1: float, z1: float, **kwargs) -> Rectangle:  # noqa: ANN003 - matplotlib kwargs
    return Rectangle((x0, z0), x1 - x0, z1 - z0, **kwargs)


def draw_floorplan(
    ax: Axes,
    floorplan: FloorPlan,
    graph_positions: np.ndarray | None = None,
    neighbors: np.ndarray | None = None,
    room_labels: bool = True,
    furniture_labels: bool = False,
) -> Axes:
    """Draw rooms (tinted by floor material), walls, doorways, furniture and optionally the nav graph."""
    for room in floorplan.rooms:
        color = floorplan.material(room.floor_material).color
        tint = tuple(0.55 + 0.45 * c for c in color)
        ax.add_patch(_rect(room.x0, room.z0, room.x1, room.z1, facecolor=tint, edgecolor="none", zorder=0))
    for door in floorplan.doorways:
        ax.add_patch(_rect(door.x0, door.z0, door.x1, door.z1, facecolor=DOORWAY_COLOR, edgecolor="none", zorder=1))
    for wall in floorplan.walls:
        if wall.kind == "wall":
            ax.add_patch(_rect(*wall.footprint, facecolor=WALL_COLOR, edgecolor="none", zorder=2))
    for item in floorplan.furniture:
        color = floorplan.material(item.material).color
        ax.add_patch(_rect(*item.footprint, facecolor=color, edgecolor="#444444", linewidth=0.6, alpha=0.9, zorder=3))
        if furniture_labels:
            cx, cz = (item.x0 + item.x1) / 2, (item.z0 + item.z1) / 2
            ax.text(cx, cz, item.kind.split(":")[-1], fontsize=5, ha="center", va="center", zorder=6)
    if graph_positions is not None:
        pts = np.asarray(graph_positions)[:, [0, 2]]
        if neighbors is not None:
            nb = np.asarray(neighbors)
            src, k = np.nonzero(nb >= 0)
            # each edge once, whichever way it goes: an imported graph need not list the way back
            pairs = np.unique(np.sort(np.stack([src, nb[src, k]], axis=1), axis=1), axis=0).reshape(-1, 2)
            segments = np.stack([pts[pairs[:, 0]], pts[pairs[:, 1]]], axis=1)
            ax.add_collection(LineCollection(segments, colors=GRAPH_COLOR, linewidths=0.5, alpha=0.6, zorder=4))
        ax.scatter(pts[:, 0], pts[:, 1], s=4, color=GRAPH_COLOR, zorder=5, linewidths=0)
    if room_labels:
        # in the room's upper-left corner: at its centre a label hid the very node a scene sheet marks there and
        # the data an acoustics map draws at the room's heart; above the plan's data (zorder 7) so that it stays
        # readable, where it covers a corner node or two, and below the markers drawn over it (zorder 8 and up)
        for room in floorplan.rooms:
            ax.text(
                room.x0 + 0.1, room.z0 + 0.1, room.name.replace("_", " "),
                fontsize=7, ha="left", va="top", zorder=7.5,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.75, "linewidth": 0},
            )  # fmt: skip
    x0, z0, x1, z1 = floorplan.bounds
    pad = 0.3
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(z1 + pad, z0 - pad)  # z grows downwards: yaw 0 (-Z) points up
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    return ax
