"""The renderer, the acoustic geometry and the navigation graph read one floor plan alike."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from asgf_nav.acoustics.simulate import build_walls, simulate_source
from asgf_nav.scenes.floorplan import FloorPlan
from asgf_nav.scenes.generator import generate_floorplan
from asgf_nav.scenes.mesh import floorplan_mesh
from asgf_nav.scenes.navgraph import build_navgraph
from asgf_nav.scenes.render import RayRenderer, _embree_scene

FS = 16000


def _seen_color(plan: FloorPlan, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(R, 3) base colour of the mesh face each ray first hits (NaN where it hits nothing)."""
    scene = floorplan_mesh(plan)
    hits = _embree_scene(scene).run(origins.astype(np.float32), directions.astype(np.float32), output=1)
    prim = np.asarray(hits["primID"])
    colors = np.full((len(prim), 3), np.nan, dtype=np.float32)
    colors[prim >= 0] = scene.face_colors[prim[prim >= 0]]
    return colors


def _habitat(pra_xyz: np.ndarray) -> np.ndarray:
    """pyroomacoustics (x, z, y) -> habitat (x, y, z)."""
    return np.asarray(pra_xyz, dtype=float)[[0, 2, 1]]


def test_a_doorway_floor_sounds_like_it_looks() -> None:
    """In replica/apartment_0 the acoustic floor face over each doorway gap carries the material whose colour a
    ray cast straight down onto the rendered doorway slab sees (the living_0 / study_0 gap: carpet_grey)."""
    plan = generate_floorplan("replica", "apartment_0")
    walls = [w for w in build_walls(plan, FS, furniture=False) if np.allclose(w.corners[2], 0.0)]
    centres = np.array([((d.x0 + d.x1) / 2, 1.0, (d.z0 + d.z1) / 2) for d in plan.doorways])
    seen = _seen_color(plan, centres, np.tile([0.0, -1.0, 0.0], (len(centres), 1)))
    for d, (x, _, z), color in zip(plan.doorways, centres, seen):
        faces = [w for w in walls if Polygon(w.corners[:2].T).buffer(1e-6).contains(Point(x, z))]
        assert len(faces) == 1, d
        np.testing.assert_allclose(plan.material(faces[0].name).color, color, atol=1e-6, err_msg=str(d.rooms))


@pytest.mark.parametrize(("preset", "scene"), [("replica", "apartment_0"), ("tiny", "tiny_apartment")])
def test_every_acoustic_face_has_the_material_the_camera_sees_there(preset: str, scene: str) -> None:
    """A ray from 4 mm inside the air to each acoustic face (walls, floors, ceilings, lintels, furniture) hits a
    rendered face of that face's colour; door jambs (0.12 m across, half in each room's wall) are left out."""
    plan = generate_floorplan(preset, scene)
    origins, directions, expected = [], [], []
    for w in build_walls(plan, FS):
        normal = _habitat(w.normal / np.linalg.norm(w.normal))  # out of the air, into the solid
        if abs(normal[1]) > 0.5:
            p = Polygon(w.corners[:2].T).representative_point()
            centre = np.array([p.x, w.corners[2, 0], p.y])
        else:
            if sorted(np.ptp(w.corners, axis=1))[1] < 0.13:  # a jamb
                continue
            centre = _habitat(w.corners.mean(axis=1))
        origins.append(centre - 0.004 * normal)
        directions.append(normal)
        expected.append(plan.material(w.name).color)
    seen = _seen_color(plan, np.array(origins), np.array(directions))
    mismatched = np.flatnonzero(~(np.abs(seen - np.array(expected)).max(axis=1) <= 1e-6))  # a miss (NaN) counts
    assert not len(mismatched), [(origins[i].round(3).tolist(), expected[i]) for i in mismatched]


def test_yaw_agrees_between_graph_camera_and_ears() -> None:
    """In tiny_apartment the node MOVE_FORWARD reaches at yaw 90k lies in view k's free line of sight (centre
    depth beyond the 0.5 m step), and a source on that node is heard from azimuth 90k by the agent."""
    plan = generate_floorplan("tiny", "tiny_apartment")
    graph = build_navgraph(plan, 0.5)
    _, depth = RayRenderer(floorplan_mesh(plan), image_size=9).render_all(graph.positions)
    node, k = np.argwhere(graph.neighbors >= 0)[0]
    ahead = graph.neighbors[node, k]
    assert depth[node, k, 4, 4] > 0.5
    ears = graph.positions.astype(float) + [0.0, 1.5, 0.0]
    field = simulate_source(plan, ears[ahead], ears[node][None], FS, ism_order=1, rays=0)
    s = field.images(0)
    direct = int(np.argmin(field.delay[s]))
    assert field.delay[s][direct] == pytest.approx(0.5 / 343.0)
    assert field.azimuth[s][direct] == pytest.approx(90.0 * k)
