"""Room dressing: surface materials per room kind and the furniture placed in each room.

Materials carry octave-band absorption (for the acoustic simulation) and a colour and pattern (for
rendering). Furniture is placed against walls or free-standing, never in front of a doorway, within a
floor-area budget; :func:`prune_blocking_furniture` then removes only the pieces that would cut a room
or a doorway off from the navigable space. Deterministic in the random generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asgf_nav.scenes.floorplan import Box, Doorway, FloorPlan, Material, Room
from asgf_nav.scenes.navgraph import build_grid_graph, largest_component

DOOR_CLEAR_DEPTH = 1.0  # metres in front of a doorway kept free of furniture
MAX_POCKET_AREA = 1.0  # m^2 of walkable grid (nodes x grid cell) that furniture may box in, per pocket

# ---------------------------------------------------------------------------------------------- materials
# Absorption per octave band 125..4000 Hz from standard tables (painted plaster, parquet, carpet on
# concrete, ceramic tile, acoustic ceiling tile, plywood panel, upholstery, glazing, ...).
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("paint_white", (0.86, 0.85, 0.82), "plain", (0.01, 0.01, 0.02, 0.02, 0.02, 0.03), 0.10),
        Material("paint_beige", (0.82, 0.74, 0.62), "plain", (0.01, 0.01, 0.02, 0.02, 0.02, 0.03), 0.10),
        Material("paint_sage", (0.62, 0.70, 0.58), "plain", (0.01, 0.01, 0.02, 0.02, 0.02, 0.03), 0.10),
        Material("paint_blue", (0.55, 0.64, 0.78), "plain", (0.01, 0.01, 0.02, 0.02, 0.02, 0.03), 0.10),
        Material("paint_terracotta", (0.78, 0.52, 0.40), "plain", (0.01, 0.01, 0.02, 0.02, 0.02, 0.03), 0.10),
        Material("wallpaper_stripes", (0.80, 0.72, 0.70), "stripes", (0.02, 0.03, 0.04, 0.05, 0.07, 0.08), 0.15),
        Material("wallpaper_green", (0.58, 0.68, 0.60), "stripes", (0.02, 0.03, 0.04, 0.05, 0.07, 0.08), 0.15),
        Material("gypsum_grey", (0.72, 0.73, 0.75), "plain", (0.29, 0.10, 0.05, 0.04, 0.07, 0.09), 0.10),
        Material("brick_red", (0.62, 0.34, 0.26), "speckle", (0.03, 0.03, 0.03, 0.04, 0.05, 0.07), 0.40),
        Material("tile_wall", (0.88, 0.90, 0.92), "checker", (0.01, 0.01, 0.01, 0.01, 0.02, 0.02), 0.05),
        Material("wood_floor", (0.62, 0.44, 0.27), "planks", (0.04, 0.04, 0.07, 0.06, 0.06, 0.07), 0.15),
        Material("oak_floor", (0.74, 0.58, 0.38), "planks", (0.04, 0.04, 0.07, 0.06, 0.06, 0.07), 0.15),
        Material("carpet_grey", (0.45, 0.46, 0.50), "speckle", (0.02, 0.06, 0.14, 0.37, 0.60, 0.65), 0.20),
        Material("carpet_red", (0.55, 0.26, 0.24), "speckle", (0.02, 0.06, 0.14, 0.37, 0.60, 0.65), 0.20),
        Material("tile_floor", (0.80, 0.80, 0.76), "checker", (0.01, 0.01, 0.01, 0.01, 0.02, 0.02), 0.05),
        Material("tile_dark", (0.30, 0.32, 0.36), "checker", (0.01, 0.01, 0.01, 0.01, 0.02, 0.02), 0.05),
        Material("concrete_floor", (0.58, 0.58, 0.56), "speckle", (0.01, 0.01, 0.015, 0.02, 0.02, 0.02), 0.10),
        Material("ceiling_plaster", (0.93, 0.93, 0.91), "plain", (0.14, 0.10, 0.06, 0.05, 0.04, 0.03), 0.10),
        Material("ceiling_tiles", (0.90, 0.90, 0.88), "checker", (0.70, 0.66, 0.72, 0.92, 0.88, 0.75), 0.30),
        Material("wood_furniture", (0.52, 0.34, 0.20), "planks", (0.28, 0.22, 0.17, 0.09, 0.10, 0.11), 0.30),
        Material("wood_light", (0.80, 0.68, 0.48), "planks", (0.28, 0.22, 0.17, 0.09, 0.10, 0.11), 0.30),
        Material("fabric_sofa", (0.30, 0.40, 0.56), "speckle", (0.19, 0.37, 0.56, 0.67, 0.61, 0.59), 0.60),
        Material("fabric_bed", (0.86, 0.82, 0.74), "stripes", (0.35, 0.45, 0.57, 0.61, 0.59, 0.62), 0.60),
        Material("metal", (0.66, 0.68, 0.70), "plain", (0.01, 0.01, 0.01, 0.02, 0.02, 0.02), 0.10),
        Material("ceramic", (0.95, 0.95, 0.95), "plain", (0.01, 0.01, 0.01, 0.02, 0.02, 0.02), 0.05),
        Material("stone_counter", (0.35, 0.33, 0.32), "speckle", (0.01, 0.01, 0.015, 0.02, 0.02, 0.02), 0.10),
        Material("plant", (0.22, 0.50, 0.22), "speckle", (0.10, 0.15, 0.25, 0.35, 0.40, 0.45), 0.70),
        Material("concrete_column", (0.62, 0.61, 0.58), "plain", (0.01, 0.01, 0.015, 0.02, 0.02, 0.02), 0.10),
    )
}

FLOORS: dict[str, tuple[str, ...]] = {
    "living": ("wood_floor", "oak_floor", "carpet_grey"),
    "bedroom": ("carpet_grey", "carpet_red", "oak_floor", "wood_floor"),
    "kitchen": ("tile_floor", "tile_dark", "concrete_floor"),
    "bathroom": ("tile_floor", "tile_dark"),
    "dining": ("wood_floor", "oak_floor"),
    "study": ("carpet_grey", "oak_floor"),
    "corridor": ("wood_floor", "oak_floor", "concrete_floor"),
    "office": ("carpet_grey", "concrete_floor"),
    "meeting": ("carpet_grey", "carpet_red"),
}
WALLS: dict[str, tuple[str, ...]] = {
    "living": ("paint_white", "paint_beige", "paint_sage", "wallpaper_green", "brick_red"),
    "bedroom": ("paint_blue", "paint_beige", "wallpaper_stripes", "paint_sage", "paint_white"),
    "kitchen": ("paint_white", "tile_wall", "paint_terracotta"),
    "bathroom": ("tile_wall",),
    "dining": ("paint_terracotta", "wallpaper_stripes", "paint_beige"),
    "study": ("paint_sage", "wallpaper_green", "paint_blue"),
    "corridor": ("paint_white", "paint_beige", "gypsum_grey"),
    "office": ("gypsum_grey", "paint_white", "paint_blue"),
    "meeting": ("gypsum_grey", "paint_sage", "brick_red"),
}


@dataclass(frozen=True)
class Item:
    """Furniture template: width along the wall, depth out of it, height, placement rule."""

    kind: str
    width: float
    depth: float
    height: float
    material: str
    placement: str  # wall | centre


FURNITURE: dict[str, tuple[Item, ...]] = {
    "living": (
        Item("sofa", 2.0, 0.9, 0.85, "fabric_sofa", "wall"),
        Item("tv_stand", 1.6, 0.45, 0.6, "wood_furniture", "wall"),
        Item("bookshelf", 1.0, 0.35, 1.9, "wood_light", "wall"),
        Item("coffee_table", 1.0, 0.6, 0.45, "wood_furniture", "centre"),
        Item("armchair", 0.8, 0.8, 0.8, "fabric_sofa", "wall"),
        Item("plant", 0.45, 0.45, 1.3, "plant", "wall"),
    ),
    "bedroom": (
        Item("bed", 1.6, 2.0, 0.55, "fabric_bed", "wall"),
        Item("wardrobe", 1.2, 0.6, 2.0, "wood_furniture", "wall"),
        Item("nightstand", 0.45, 0.4, 0.5, "wood_light", "wall"),
        Item("desk", 1.2, 0.6, 0.75, "wood_light", "wall"),
    ),
    "kitchen": (
        Item("counter", 2.4, 0.6, 0.9, "stone_counter", "wall"),
        Item("fridge", 0.7, 0.7, 1.8, "metal", "wall"),
        Item("island", 1.6, 0.9, 0.9, "stone_counter", "centre"),
        Item("shelf", 0.8, 0.35, 1.8, "wood_light", "wall"),
    ),
    "bathroom": (
        Item("bathtub", 1.7, 0.75, 0.55, "ceramic", "wall"),
        Item("toilet", 0.4, 0.65, 0.75, "ceramic", "wall"),
        Item("sink", 0.6, 0.45, 0.85, "ceramic", "wall"),
    ),
    "dining": (
        Item("dining_table", 1.8, 0.9, 0.75, "wood_furniture", "centre"),
        Item("sideboard", 1.6, 0.45, 0.85, "wood_furniture", "wall"),
        Item("plant", 0.45, 0.45, 1.3, "plant", "wall"),
    ),
    "study": (
        Item("desk", 1.4, 0.7, 0.75, "wood_light", "wall"),
        Item("bookshelf", 1.0, 0.35, 1.9, "wood_furniture", "wall"),
        Item("armchair", 0.8, 0.8, 0.8, "fabric_sofa", "wall"),
    ),
    "office": (
        Item("desk", 1.4, 0.7, 0.75, "wood_light", "wall"),
        Item("desk", 1.4, 0.7, 0.75, "wood_light", "wall"),
        Item("cabinet", 0.8, 0.45, 1.2, "metal", "wall"),
        Item("bookshelf", 1.0, 0.35, 1.9, "wood_furniture", "wall"),
        Item("column", 0.4, 0.4, 0.0, "concrete_column", "centre"),
        Item("plant", 0.45, 0.45, 1.3, "plant", "wall"),
    ),
    "meeting": (
        Item("meeting_table", 2.4, 1.1, 0.75, "wood_furniture", "centre"),
        Item("cabinet", 0.8, 0.45, 1.2, "metal", "wall"),
    ),
    "corridor": (Item("plant", 0.45, 0.45, 1.3, "plant", "wall"),),
}


# ---------------------------------------------------------------------------------------------- placement
def _overlaps(r: tuple[float, ...], others: list[tuple[float, ...]], gap: float) -> bool:
    return any(r[0] < o[2] + gap and o[0] < r[2] + gap and r[1] < o[3] + gap and o[1] < r[3] + gap for o in others)


def furnish(rng: np.random.Generator, room: Room, doorways: list[Doorway], ceiling: float) -> list[Box]:
    """Place the room kind's furniture against walls or free-standing, never in front of a doorway.

    The clear zone alone does not keep a doorway passable on a coarse grid (furniture just outside it can
    still wall in the nodes behind the door): :func:`prune_blocking_furniture` checks that.
    """
    keep_clear = []
    for d in doorways:
        if room.name in d.rooms:
            m = DOOR_CLEAR_DEPTH
            keep_clear.append((d.x0 - m, d.z0 - m, d.x1 + m, d.z1 + m))
    placed: list[tuple[float, ...]] = []
    boxes: list[Box] = []
    budget = 0.28 * room.area
    used = 0.0
    for item in FURNITURE.get(room.kind, ()):
        if item.kind == "column" and room.area < 30:
            continue
        if rng.random() < 0.15:  # not every room has every item
            continue
        for _ in range(25):
            rect = _candidate_rect(rng, room, item)
            if rect is None:
                break
            area = (rect[2] - rect[0]) * (rect[3] - rect[1])
            gap = 0.75 if item.placement == "centre" else 0.02
            if used + area > budget or _overlaps(rect, placed, gap) or _overlaps(rect, keep_clear, 0.0):
                continue
            placed.append(rect)
            used += area
            height = ceiling if item.height <= 0 else item.height
            boxes.append(Box(*(round(v, 4) for v in rect), 0.0, height, item.material, f"furniture:{item.kind}"))
            break
    return boxes


def _candidate_rect(rng: np.random.Generator, room: Room, item: Item) -> tuple[float, ...] | None:
    x0, z0, x1, z1 = room.x0, room.z0, room.x1, room.z1
    if item.placement == "centre":
        w, d = (item.width, item.depth) if rng.random() < 0.5 else (item.depth, item.width)
        if x1 - x0 < w + 1.6 or z1 - z0 < d + 1.6:
            return None
        cx = rng.uniform(x0 + 0.8 + w / 2, x1 - 0.8 - w / 2)
        cz = rng.uniform(z0 + 0.8 + d / 2, z1 - 0.8 - d / 2)
        return (cx - w / 2, cz - d / 2, cx + w / 2, cz + d / 2)
    side = int(rng.integers(4))
    w, d = item.width, item.depth
    along = (x0, x1) if side in (0, 1) else (z0, z1)
    if along[1] - along[0] < w + 0.1 or (z1 - z0 if side in (0, 1) else x1 - x0) < d + 1.0:
        return None
    a = rng.uniform(along[0] + 0.02, along[1] - 0.02 - w)
    if side == 0:
        return (a, z0 + 0.02, a + w, z0 + 0.02 + d)
    if side == 1:
        return (a, z1 - 0.02 - d, a + w, z1 - 0.02)
    if side == 2:
        return (x0 + 0.02, a, x0 + 0.02 + d, a + w)
    return (x1 - 0.02 - d, a, x1 - 0.02, a + w)


def doorway_crossed(doorway: Doorway, positions: np.ndarray, neighbors: np.ndarray) -> bool:
    """Whether some edge of the graph (``positions`` (N, 3), ``neighbors`` (N, 4), -1 for none) steps through
    ``doorway``: it crosses the wall's centre line within the door's span."""
    src, k = np.nonzero(neighbors >= 0)
    a, b = positions[src][:, [0, 2]], positions[neighbors[src, k]][:, [0, 2]]
    thin = 0 if doorway.x1 - doorway.x0 < doorway.z1 - doorway.z0 else 1  # axis across the wall
    centre = ((doorway.x0 + doorway.x1) / 2, (doorway.z0 + doorway.z1) / 2)[thin]
    lo, hi = ((doorway.z0, doorway.z1), (doorway.x0, doorway.x1))[thin]
    along = a[:, 1 - thin]  # an edge that crosses the wall runs along the thin axis: constant here
    crosses = (a[:, thin] - centre) * (b[:, thin] - centre) < 0
    return bool(np.any(crosses & (along > lo) & (along < hi)))


def is_walkable(plan: FloorPlan, grid_size: float) -> bool:
    """The largest component of the plan's walkable grid graph holds a node of every room and an edge
    through every doorway, and every other component (floor boxed in by furniture, e.g. a corner node
    behind a bed) covers at most :data:`MAX_POCKET_AREA`."""
    graph = build_grid_graph(plan, grid_size)
    if not graph.num_nodes:
        return False
    sizes = np.sort(np.bincount(graph.components()))
    if len(sizes) > 1 and sizes[-2] * grid_size**2 > MAX_POCKET_AREA + 1e-9:
        return False
    main = largest_component(graph)
    pts = main.positions[:, [0, 2]]
    reached = all(
        np.any((pts[:, 0] >= r.x0) & (pts[:, 0] <= r.x1) & (pts[:, 1] >= r.z0) & (pts[:, 1] <= r.z1))
        for r in plan.rooms
    )
    return reached and all(doorway_crossed(d, main.positions, main.neighbors) for d in plan.doorways)


def prune_blocking_furniture(plan: FloorPlan, grid_size: float) -> FloorPlan:
    """Remove only the furniture that makes ``plan`` unwalkable (:func:`is_walkable`), in place.

    A walkable plan is returned untouched. Otherwise the pieces are put back one by one in placement order
    and a piece is kept only if the plan stays walkable with it, so one blocking piece costs that piece
    alone, never the furniture of the rooms placed after it.
    """
    if is_walkable(plan, grid_size):
        return plan
    pieces, plan.furniture = list(plan.furniture), []
    if not is_walkable(plan, grid_size):
        raise ValueError(
            f"floor plan {plan.name!r} is not walkable at grid size {grid_size} even without furniture: "
            "a room or a doorway lies off the largest connected part of its navigation grid"
        )
    for box in pieces:
        plan.furniture.append(box)
        if not is_walkable(plan, grid_size):
            plan.furniture.pop()
    return plan
