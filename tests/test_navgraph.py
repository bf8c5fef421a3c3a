"""Navigation graph: connectivity, geodesic table, edges that never cross walls or furniture."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.scenes.floorplan import Box, Doorway, FloorPlan, Material, Room, yaw_forward
from asgf_nav.scenes.furnish import doorway_crossed
from asgf_nav.scenes.generator import generate_floorplan
from asgf_nav.scenes.navgraph import (
    axis_segments_blocked,
    build_grid_graph,
    build_navgraph,
    geodesic_hops,
    point_rect_distance,
    solid_rects,
)
from asgf_nav.scenes.presets import get_preset
from asgf_nav.scenes.scene import Scene
from asgf_nav.scenes.store import SceneStoreError, write_stage

SCENES = [("tiny", "tiny_apartment"), ("replica", "frl_apartment_0"), ("replica", "apartment_1"), ("mp3d", "house_06")]


def _graph(preset: str, scene: str):
    plan = generate_floorplan(preset, scene)
    return plan, build_navgraph(plan, get_preset(preset).grid_size)


def _bfs(neighbors: np.ndarray, source: int) -> np.ndarray:
    dist = np.full(len(neighbors), -1)
    dist[source] = 0
    queue = deque([source])
    while queue:
        a = queue.popleft()
        for b in neighbors[a]:
            if b >= 0 and dist[b] < 0:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


@pytest.mark.parametrize("preset,scene", SCENES)
def test_graph_is_connected_and_geodesics_are_bfs(preset: str, scene: str) -> None:
    _, g = _graph(preset, scene)
    hops = g.geodesic_hops.astype(np.int64)
    assert g.positions.dtype == np.float32 and g.neighbors.dtype == np.int32
    assert hops.shape == (g.num_nodes, g.num_nodes)
    assert np.all(_bfs(g.neighbors, 0) >= 0), "graph must be one connected component"
    assert np.array_equal(hops, hops.T)
    assert np.all(np.diag(hops) == 0) and np.all(hops[~np.eye(len(hops), dtype=bool)] > 0)
    rng = np.random.default_rng(0)
    for source in rng.choice(g.num_nodes, size=5, replace=False):
        assert np.array_equal(hops[source], _bfs(g.neighbors, int(source)))
    for k in rng.choice(g.num_nodes, size=10, replace=False):  # triangle inequality through node k
        assert np.all(hops <= hops[:, k : k + 1] + hops[k : k + 1, :])
    # hop distance can never be shorter than the Manhattan distance on the grid
    xz = g.positions[:, [0, 2]].astype(np.float64)
    manhattan = np.abs(xz[:, None] - xz[None]).sum(-1) / g.grid_size
    assert np.all(hops >= np.rint(manhattan) - 1e-9)


@pytest.mark.parametrize("preset,scene", SCENES)
def test_edges_are_axis_steps_that_do_not_cross_solids(preset: str, scene: str) -> None:
    plan, g = _graph(preset, scene)
    assert g.positions[:, 1].max() == 0.0 and g.positions[:, 1].min() == 0.0
    for k in range(4):
        src = np.flatnonzero(g.neighbors[:, k] >= 0)
        dst = g.neighbors[src, k]
        step = (g.positions[dst] - g.positions[src])[:, [0, 2]]
        np.testing.assert_allclose(step, np.tile(yaw_forward(90 * k) * g.grid_size, (len(src), 1)), atol=1e-5)
        assert np.all(g.neighbors[dst, (k + 2) % 4] == src), "edges must be symmetric"
        for a, b in zip(src, dst):
            pa, pb = g.positions[a], g.positions[b]
            assert not plan.segment_blocked((pa[0], pa[2]), (pb[0], pb[2])), f"edge {a}->{b} crosses a solid"
    # every node keeps clearance from walls and furniture
    for node in range(0, g.num_nodes, 7):
        p = g.positions[node]
        assert not plan.segment_blocked((p[0], p[2]), (p[0], p[2]), margin=0.14)


@pytest.mark.parametrize("preset,scene", SCENES)
def test_every_room_is_reachable(preset: str, scene: str) -> None:
    plan, g = _graph(preset, scene)
    xz = g.positions[:, [0, 2]]
    for room in plan.rooms:
        inside = (xz[:, 0] >= room.x0) & (xz[:, 0] <= room.x1) & (xz[:, 1] >= room.z0) & (xz[:, 1] <= room.z1)
        assert inside.any(), f"room {room.name} of {scene} has no navigation node"


@pytest.mark.parametrize("preset,scene", [*SCENES, ("mp3d", "house_81")])
def test_every_doorway_is_crossed_by_an_edge(preset: str, scene: str) -> None:
    """No furniture may make a doorway impassable, also where it stands outside the door's clear zone but
    within a coarse grid's reach (mp3d house_81: a bed two nodes behind a bedroom door)."""
    plan, g = _graph(preset, scene)
    for d in plan.doorways:
        assert doorway_crossed(d, g.positions, g.neighbors), f"{scene}: no edge through doorway {d}"


def test_graph_is_deterministic() -> None:
    _, a = _graph("replica", "apartment_1")
    _, b = _graph("replica", "apartment_1")
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.neighbors, b.neighbors)
    assert np.array_equal(a.geodesic_hops, b.geodesic_hops)


def test_vectorised_blocking_matches_floorplan_check() -> None:
    plan = generate_floorplan("replica", "frl_apartment_1")
    rects = solid_rects(plan)
    rng = np.random.default_rng(1)
    x0, z0, x1, z1 = plan.bounds
    a = rng.uniform([x0, z0], [x1, z1], size=(400, 2))
    horizontal = rng.random(400) < 0.5
    length = rng.uniform(-1.5, 1.5, 400)
    b = a + np.stack([np.where(horizontal, length, 0), np.where(horizontal, 0, length)], axis=1)
    for margin in (0.0, 0.1):
        fast = axis_segments_blocked(a, b, rects, margin)
        slow = [plan.segment_blocked(tuple(p), tuple(q), margin) for p, q in zip(a, b)]
        assert np.array_equal(fast, np.array(slow))


def _two_rooms_with_door() -> FloorPlan:
    """Two 3 x 2.5 m rooms side by side along x, wall at x = 3.25, a 1 m door centred on z = 1.5."""
    mat = Material("m", (0.5, 0.5, 0.5))
    t = 0.06
    walls = [
        Box(0.25 - t, 0.25 - t, 6.25 + t, 0.25 + t, 0, 2.5, "m"),
        Box(0.25 - t, 2.75 - t, 6.25 + t, 2.75 + t, 0, 2.5, "m"),
        Box(0.25 - t, 0.25 - t, 0.25 + t, 2.75 + t, 0, 2.5, "m"),
        Box(6.25 - t, 0.25 - t, 6.25 + t, 2.75 + t, 0, 2.5, "m"),
        Box(3.25 - t, 0.25, 3.25 + t, 1.0, 0, 2.5, "m"),
        Box(3.25 - t, 2.0, 3.25 + t, 2.75, 0, 2.5, "m"),
        Box(3.25 - t, 1.0, 3.25 + t, 2.0, 2.1, 2.5, "m", kind="lintel"),
    ]
    rooms = [
        Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 2.75 - t, "m", "m"),
        Room("b", "bedroom", 3.25 + t, 0.25 + t, 6.25 - t, 2.75 - t, "m", "m"),
    ]
    door = Doorway(3.25 - t, 1.0, 3.25 + t, 2.0, 2.1, ("a", "b"))
    return FloorPlan("two", "apartment", 0, 2.5, "m", rooms, walls, [], [door], {"m": mat})


def test_hand_made_plan_passes_only_through_the_door() -> None:
    plan = _two_rooms_with_door()
    g = build_navgraph(plan, 0.5)
    xz = g.positions[:, [0, 2]]
    crossing = [
        (a, b)
        for a in range(g.num_nodes)
        for b in g.neighbors[a]
        if b >= 0 and (xz[a, 0] - 3.25) * (xz[b, 0] - 3.25) < 0
    ]
    assert crossing and all(abs(xz[a, 1] - 1.5) < 1e-6 for a, _ in crossing), "only the z=1.5 row crosses"
    # from (1.0, 0.5) to (5.5, 0.5): down to the door row, across, back: 2 + 9 + 2 hops
    src = int(np.flatnonzero((np.abs(xz[:, 0] - 1.0) < 1e-6) & (np.abs(xz[:, 1] - 0.5) < 1e-6))[0])
    dst = int(np.flatnonzero((np.abs(xz[:, 0] - 5.5) < 1e-6) & (np.abs(xz[:, 1] - 0.5) < 1e-6))[0])
    assert g.geodesic_hops[src, dst] == 13
    # furniture that blocks the doorway cuts the second room off: only the largest part is kept
    plan.furniture = [Box(2.6, 1.0, 3.1, 2.0, 0, 1.0, "m", kind="furniture:shelf")]
    g2 = build_navgraph(plan, 0.5)
    assert g2.num_nodes < g.num_nodes
    assert np.all(_bfs(g2.neighbors, 0) >= 0)
    room_b = int(np.sum(xz[:, 0] > 3.25))  # the shelf takes room a's nodes next to the door: b is larger
    assert g2.num_nodes == room_b and np.all(g2.positions[:, 0] > 3.25)


def test_touching_counts_as_blocked_and_the_clearance_is_a_minimum() -> None:
    """Blocking uses closed intervals, as FloorPlan.segment_blocked; a node exactly ``clearance`` from a
    solid is kept."""
    rect = np.array([[1.0, 0.0, 2.0, 1.0]])
    a, b = np.array([[0.0, 0.5]]), np.array([[1.0, 0.5]])
    assert axis_segments_blocked(a, b, rect, 0.0).tolist() == [True]
    assert axis_segments_blocked(a, b - [[0.25, 0.0]], rect, 0.25).tolist() == [True]
    assert axis_segments_blocked(a, b - [[0.25, 0.0]], rect, 0.2).tolist() == [False]
    plan = _two_rooms_with_door()
    plan.furniture = [Box(1.25, 0.75, 1.75, 1.25, 0, 1.0, "m", kind="furniture:table")]
    xz = build_grid_graph(plan, 0.5, clearance=0.25).positions[:, [0, 2]]
    assert np.any(np.all(xz == [1.0, 1.0], axis=1))  # 0.25 m from the table's edge at x = 1.25
    assert not np.any(np.all(xz == [1.5, 1.0], axis=1))  # inside the table


def _node(xz: np.ndarray, x: float, z: float) -> int:
    found = np.flatnonzero(np.all(np.abs(xz - [x, z]) < 1e-6, axis=1))
    return int(found[0]) if len(found) else -1


def test_a_step_keeps_the_edge_margin_from_furniture_on_either_side() -> None:
    """Nodes far enough from a piece (0.206 m >= 0.15) may still not be joined when the step between them
    passes 0.05 m from it (< the 0.10 m edge margin), on whichever side of the step the piece stands; a step
    0.20 m away stays. Step k=3 is +X (yaw 270), k=2 is +Z."""
    plan = _two_rooms_with_door()
    plan.furniture = [
        Box(1.2, 1.05, 1.3, 1.3, 0, 1.0, "m", kind="furniture:plant"),  # 0.05 m above the z = 1.0 step
        Box(2.2, 0.7, 2.3, 0.95, 0, 1.0, "m", kind="furniture:plant"),  # 0.05 m below the z = 1.0 step
    ]
    g = build_navgraph(plan, 0.5)
    xz = g.positions[:, [0, 2]]
    for x in (1.0, 1.5, 2.0, 2.5):
        assert _node(xz, x, 1.0) >= 0  # every end node keeps its clearance
    assert g.neighbors[_node(xz, 1.0, 1.0), 3] == -1 and g.neighbors[_node(xz, 2.0, 1.0), 3] == -1
    assert g.neighbors[_node(xz, 1.5, 1.0), 3] == _node(xz, 2.0, 1.0)  # 0.2 m from both pieces
    assert g.neighbors[_node(xz, 1.0, 1.5), 3] == _node(xz, 1.5, 1.5)  # 0.2 m above the first piece
    assert g.neighbors[_node(xz, 1.0, 1.0), 2] == _node(xz, 1.0, 1.5)  # 0.2 m left of it
    loose = build_navgraph(plan, 0.5, edge_margin=0.04)
    assert loose.neighbors[_node(xz, 1.0, 1.0), 3] == _node(xz, 1.5, 1.0)


def test_nodes_are_numbered_row_by_row() -> None:
    """Node ids are stored in every bake (views, impulse responses, episodes): they run along x within a
    row of equal z, rows by increasing z, so the same plan always numbers its nodes the same way."""
    g = build_navgraph(_two_rooms_with_door(), 0.5)
    x, z = g.positions[:, 0], g.positions[:, 2]
    assert np.array_equal(np.lexsort((x, z)), np.arange(g.num_nodes))
    assert g.positions[0, [0, 2]].tolist() == [0.5, 0.5] and g.positions[1, [0, 2]].tolist() == [1.0, 0.5]


def test_point_rect_distance_is_euclidean_to_the_nearest_point() -> None:
    """Clearance is the straight-line distance to a footprint: 0.5 m diagonally off a corner (0.3, 0.4), not
    the 0.4 m of the larger axis gap or the 0.7 m of their sum; 1 m beside an edge; 0 inside."""
    rect = np.array([[0.3, 0.4, 1.0, 1.0]])
    points = np.array([[0.0, 0.0], [2.0, 0.7], [0.5, 0.5]])
    np.testing.assert_allclose(point_rect_distance(points, rect), [[0.5], [1.0], [0.0]], atol=1e-12)


def test_a_node_in_a_doorway_gap_joins_the_rooms_on_a_fine_grid() -> None:
    """At 0.25 m the door of the 0.12 m wall at x = 3.25 holds grid points: they are free floor, so both rooms
    stay in one graph and the step through the door is two hops (3.0 -> 3.25 -> 3.5)."""
    g = build_navgraph(_two_rooms_with_door(), 0.25)
    xz = g.positions[:, [0, 2]]
    assert [_node(xz, 3.25, z) >= 0 for z in (1.0, 1.25, 1.5, 1.75, 2.0)] == [False, True, True, True, False]
    assert np.any(xz[:, 0] < 3.25) and np.any(xz[:, 0] > 3.25)
    assert g.geodesic_hops[_node(xz, 3.0, 1.5), _node(xz, 3.5, 1.5)] == 2


def test_geodesic_hops_are_bfs_counts_and_refuse_a_disconnected_graph() -> None:
    """A chain 0 - 1 - 2 (steps +X) has hop counts |i - j|; two nodes with no edge have no geodesic, which is
    an error, not a number cast from infinity."""
    chain = np.array([[-1, -1, -1, 1], [-1, 0, -1, 2], [-1, 1, -1, -1]], dtype=np.int32)
    assert geodesic_hops(chain).tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    with pytest.raises(ValueError, match="not connected"):
        geodesic_hops(np.full((2, 4), -1, dtype=np.int32))


def test_a_plan_without_a_walkable_node_is_refused_by_name() -> None:
    """A clearance wider than the rooms leaves no node: the error names the plan and the grid size."""
    with pytest.raises(ValueError, match="'two' has no walkable grid node at grid size 0.5"):
        build_navgraph(_two_rooms_with_door(), 0.5, clearance=2.0)


def _layout_scene(directory: Path, hops: np.ndarray | None = None) -> Scene:
    """A layout stage of three nodes on a 0.5 m grid (a row at z = 0.5, then one node above its end)."""
    positions = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.5], [1.0, 0.0, 1.0]], dtype=np.float32)
    neighbors = np.array([[-1, -1, -1, 1], [-1, 0, 2, -1], [1, -1, -1, -1]], dtype=np.int32)
    hops = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=np.int16) if hops is None else hops
    arrays = {"positions": positions, "neighbors": neighbors, "geodesic_hops": hops}
    write_stage(directory, "layout", arrays, meta={"grid_size": 0.5})
    return Scene(directory)


def test_scene_node_at_rounds_to_the_nearest_grid_cell(tmp_path: Path) -> None:
    """A position 5 mm short of a node in x (and 5 mm past it in z) is that node: the grid cell is rounded to
    the nearest, not floored to the one below."""
    scene = _layout_scene(tmp_path)
    assert scene.node_at((0.995, 0.0, 0.505)) == 1
    assert scene.node_at((0.995, 0.0, 0.995)) == 2
    assert scene.geodesic_distance(0, 2) == pytest.approx(1.0)


def test_geodesic_distance_between_unjoined_nodes_is_infinite(tmp_path: Path) -> None:
    """An imported SoundSpaces graph stores -1 hops between nodes no path joins: that is no distance, not -0.5 m."""
    hops = np.array([[0, 1, -1], [1, 0, -1], [-1, -1, 0]], dtype=np.int16)
    scene = _layout_scene(tmp_path, hops)
    assert scene.geodesic_distance(0, 1) == pytest.approx(0.5)
    assert scene.geodesic_distance(0, 2) == math.inf and scene.geodesic_distance(2, 2) == 0.0


def test_a_geodesic_table_of_another_shape_is_refused(tmp_path: Path) -> None:
    """A hop table that is not (N, N) for N nodes is refused when the scene opens, by name."""
    with pytest.raises(SceneStoreError, match=r"geodesic_hops.npy has shape \(3, 2\), expected \(3, 3\)"):
        _layout_scene(tmp_path, np.zeros((3, 2), dtype=np.int16))
