"""Ray-cast RGB-D rendering: exact z-depth, habitat yaw convention, determinism, mesh files from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from asgf_nav.scenes.floorplan import Box, FloorPlan, Material, Room
from asgf_nav.scenes.generator import generate_floorplan
from asgf_nav.scenes.mesh import floorplan_mesh, load_mesh_file
from asgf_nav.scenes.navgraph import build_navgraph
from asgf_nav.scenes.render import RayRenderer, pixel_offsets, render_mesh_file

SIZE = 64
CEILING = 2.5


def _box_room(furniture: list[Box] | None = None) -> FloorPlan:
    """Room interior x in [0, 6], z in [0, 8]; walls 0.1 m thick outside it."""
    mats = {
        "wall": Material("wall", (0.8, 0.8, 0.7), "stripes"),
        "floor": Material("floor", (0.6, 0.4, 0.2), "planks"),
        "ceil": Material("ceil", (0.9, 0.9, 0.9)),
        "red": Material("red", (0.9, 0.1, 0.1)),
    }
    t = 0.1
    walls = [
        Box(-t, -t, 6 + t, 0, 0, CEILING, "wall"),
        Box(-t, 8, 6 + t, 8 + t, 0, CEILING, "wall"),
        Box(-t, 0, 0, 8, 0, CEILING, "wall"),
        Box(6, 0, 6 + t, 8, 0, CEILING, "wall"),
    ]
    room = Room("r", "living", 0, 0, 6, 8, "floor", "wall")
    return FloorPlan("box", "room", 0, CEILING, "ceil", [room], walls, furniture or [], [], mats)


def _render(plan: FloorPlan, position: tuple[float, float, float], yaw: float, size: int = SIZE):
    rgb, depth = RayRenderer(floorplan_mesh(plan), size).render(np.array([position]), np.array([yaw]))
    return rgb[0], depth[0]


@pytest.mark.parametrize("yaw,distance", [(0, 3.0), (90, 2.0), (180, 5.0), (270, 4.0)])
def test_depth_facing_a_wall_is_exact_z_depth(yaw: float, distance: float) -> None:
    # camera at x=2, z=3: -Z wall 3 m away, -X wall 2 m, +Z wall 5 m, +X wall 4 m
    _, depth = _render(_box_room(), (2.0, 0.0, 3.0), yaw)
    centre_row = depth[SIZE // 2]
    # a fronto-parallel wall has the same z-depth in every pixel (ray length would grow to the sides)
    half_width = int(SIZE / 2 * min(1.0, 1.0 / distance))  # columns that still see this wall
    cols = slice(SIZE // 2 - half_width + 1, SIZE // 2 + half_width - 1)
    one_pixel = distance * np.tan(np.pi / 4) * 2 / SIZE
    assert np.all(np.abs(centre_row[cols] - distance) < min(one_pixel, 1e-3))


def test_floor_and_ceiling_depth_follow_the_pinhole_model() -> None:
    _, depth = _render(_box_room(), (3.0, 0.0, 7.5), 0.0)  # looking down the 8 m room
    # bottom pixel row centre: ray hits the floor 1.25 m below the camera at v = (1 - 2 * 63.5 / 64)
    v = -(1 - 2 * (SIZE - 0.5) / SIZE)
    assert depth[-1, SIZE // 2] == pytest.approx(1.25 / v, rel=1e-4)
    assert depth[0, SIZE // 2] == pytest.approx((CEILING - 1.25) / v, rel=1e-4)


def test_yaw_convention_and_image_orientation() -> None:
    red = Box(4.5, 0.0, 6.0, 1.0, 0.0, CEILING, "red", kind="furniture:shelf")  # at +X, far -Z corner
    rgb, _ = _render(_box_room([red]), (2.0, 0.0, 3.0), 0.0)  # facing -Z, +X is to the right
    redness = (rgb[..., 0].astype(int) - rgb[..., 1].astype(int)) > 80
    assert redness[:, SIZE // 2 :].sum() > 20 and redness[:, : SIZE // 2].sum() == 0
    rgb_back, _ = _render(_box_room([red]), (2.0, 0.0, 3.0), 180.0)
    assert ((rgb_back[..., 0].astype(int) - rgb_back[..., 1].astype(int)) > 80).sum() == 0


def test_rgb_distinguishes_surfaces_and_carries_texture() -> None:
    rgb, depth = _render(_box_room(), (3.0, 0.0, 6.0), 0.0, size=128)
    floor, wall, ceiling = rgb[120, 40:90].astype(float), rgb[64, 40:90].astype(float), rgb[5, 40:90].astype(float)
    assert np.abs(floor.mean(0) - wall.mean(0)).sum() > 30
    assert np.abs(ceiling.mean(0) - wall.mean(0)).sum() > 15
    assert floor.std() > 3 and wall.std() > 3, "planks and stripes must show up"
    assert rgb.dtype == np.uint8 and depth.dtype == np.float32 and np.all(depth > 0)


def test_rendering_is_deterministic() -> None:
    plan = generate_floorplan("replica", "frl_apartment_0")
    positions = build_navgraph(plan, 0.5).positions[:6]
    a = RayRenderer(floorplan_mesh(plan), SIZE).render_all(positions)
    b = RayRenderer(floorplan_mesh(generate_floorplan("replica", "frl_apartment_0")), SIZE).render_all(positions)
    assert a[0].shape == (6, 4, SIZE, SIZE, 3) and a[1].shape == (6, 4, SIZE, SIZE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.all(a[1] > 0), "inside a closed scene every ray hits something"


def test_nothing_hit_gives_zero_depth_and_black() -> None:
    rgb, depth = _render(_box_room(), (3.0, 0.0, 40.0), 180.0)  # outside, looking away
    assert np.all(depth == 0) and np.all(rgb == 0)


@pytest.mark.parametrize("suffix", ["ply", "glb"])
def test_mesh_file_renders_like_the_floorplan(tmp_path: Path, suffix: str) -> None:
    plan = generate_floorplan("tiny", "tiny_apartment")
    scene = floorplan_mesh(plan)
    mesh = scene.mesh.copy()
    mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.rint(scene.face_colors * 255).astype(np.uint8))
    path = tmp_path / f"scene.{suffix}"
    mesh.export(path)
    positions = build_navgraph(plan, 0.5).positions[:3]
    yaws = np.array([0.0, 90.0, 270.0])
    rgb_file, depth_file = render_mesh_file(path, positions, yaws, image_size=SIZE)
    rgb_ref, depth_ref = RayRenderer(scene, SIZE).render(positions, yaws)
    np.testing.assert_allclose(depth_file, depth_ref, atol=1e-4)
    # colours too: the same surfaces in the same places (the renderers shade edges a little differently:
    # 1.7 / 255 apart on average, correlation 0.97 measured)
    assert np.abs(rgb_file.astype(float) - rgb_ref).mean() < 4.0
    assert np.corrcoef(rgb_file.ravel().astype(float), rgb_ref.ravel().astype(float))[0, 1] > 0.9
    loaded = load_mesh_file(path)
    if suffix == "ply":  # PLY keeps per-face colours; GLB may turn them into vertex colours
        np.testing.assert_allclose(loaded.face_colors, scene.face_colors, atol=1 / 255 + 1e-6)
    assert rgb_file.std() > 5


def test_z_up_mesh_is_converted(tmp_path: Path) -> None:
    plan = generate_floorplan("tiny", "tiny_room_val")
    scene = floorplan_mesh(plan)
    v = scene.mesh.vertices
    z_up = trimesh.Trimesh(np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1), scene.mesh.faces, process=False)
    path = tmp_path / "zup.ply"
    z_up.export(path)
    positions = build_navgraph(plan, 0.5).positions[:2]
    yaws = np.array([0.0, 180.0])
    _, depth = render_mesh_file(path, positions, yaws, image_size=32, up_axis="z")
    _, ref = RayRenderer(scene, 32).render(positions, yaws)
    np.testing.assert_allclose(depth, ref, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        load_mesh_file(tmp_path / "nope.ply")


def _plan_and_renderer(size: int = 8):
    from asgf_nav.scenes.generator import generate_floorplan
    from asgf_nav.scenes.mesh import floorplan_mesh
    from asgf_nav.scenes.navgraph import build_navgraph
    from asgf_nav.scenes.render import RayRenderer

    plan = generate_floorplan("tiny", "tiny_apartment")
    return build_navgraph(plan, 0.5).positions, RayRenderer(floorplan_mesh(plan), size)


def test_render_all_pairs_every_position_with_every_yaw() -> None:
    positions, renderer = _plan_and_renderer()
    positions = positions[[0, len(positions) // 2, -1]]
    rgb, depth = renderer.render_all(positions, (0.0, 90.0, 180.0, 270.0))
    for n in range(3):
        for k in range(4):
            c, d = renderer.render(positions[n : n + 1], np.array([90.0 * k]))
            assert np.array_equal(rgb[n, k], c[0]) and np.array_equal(depth[n, k], d[0])


def test_a_face_takes_the_mean_of_its_vertex_colours(tmp_path):
    """A PLY triangle with red, green and blue vertices renders with the mean colour (1/3, 1/3, 1/3)."""
    import trimesh

    from asgf_nav.scenes.mesh import load_mesh_file

    mesh = trimesh.Trimesh(
        vertices=[[0, 0, 0], [1, 0, 0], [0, 0, 1]],
        faces=[[0, 1, 2]],
        vertex_colors=[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]],
        process=False,
    )
    path = tmp_path / "rgb.ply"
    mesh.export(path)
    loaded = load_mesh_file(path)
    np.testing.assert_allclose(loaded.face_colors, [[1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


def _plain_room() -> FloorPlan:
    """The box room with untextured ("plain") walls and floor."""
    plan = _box_room()
    plan.materials["wall"] = Material("wall", (0.8, 0.8, 0.7))
    plan.materials["floor"] = Material("floor", (0.6, 0.4, 0.2))
    return plan


def _expected_colour(base: tuple[float, ...], normal: np.ndarray, facing: float, point: np.ndarray, depth: float):
    """The documented shading, written out: ambient 0.38, key and fill lights, a camera light of the cosine
    between view and surface, darkening of walls near the floor, plain texture, then haze 25 m deep."""
    key, fill = np.array([0.4, 0.85, 0.35]), np.array([-0.6, 0.3, -0.75])
    key, fill = key / np.linalg.norm(key), fill / np.linalg.norm(fill)
    light = 0.38 + 0.34 * max(normal @ key, 0.0) + 0.14 * max(normal @ fill, 0.0) + 0.22 * abs(facing)
    wall = abs(normal[1]) < 0.5
    occlusion = 1.0 - 0.3 * np.exp(-point[1] / 0.12) if wall else 1.0
    u, v = (point[0], point[1]) if wall else (point[0], point[2])  # in the surface plane
    texture = 0.97 + 0.03 * np.sin(1.3 * u) * np.sin(1.7 * v)
    haze = 1.0 - np.exp(-depth / 25.0)
    colour = np.asarray(base) * light * occlusion * texture
    return 255.0 * (colour * (1 - haze) + np.array([0.78, 0.79, 0.82]) * haze)


def test_a_wall_ahead_and_the_floor_are_shaded_as_documented() -> None:
    """Centre pixels (odd image size: a ray straight ahead) of the walls ahead and behind and the bottom centre
    pixel (the floor), to rounding."""
    size, x, z = 33, 1.7, 3.0
    rgb, depth = _render(_plain_room(), (x, 0.0, z), 0.0, size=size)
    wall = _expected_colour((0.8, 0.8, 0.7), np.array([0.0, 0.0, 1.0]), -1.0, np.array([x, 1.25, 0.0]), z)
    assert depth[size // 2, size // 2] == pytest.approx(z, abs=1e-5)
    np.testing.assert_allclose(rgb[size // 2, size // 2], wall, atol=0.52)  # rounded, not truncated
    down = (size - 0.5) / size * 2 - 1  # the bottom row's ray: 1 m ahead, `down` metres lower
    ahead = 1.25 / down
    floor = _expected_colour(
        (0.6, 0.4, 0.2), np.array([0.0, 1.0, 0.0]), -down / np.hypot(1.0, down), np.array([x, 0.0, z - ahead]), ahead
    )
    assert depth[-1, size // 2] == pytest.approx(ahead, rel=1e-5)
    np.testing.assert_allclose(rgb[-1, size // 2], floor, atol=0.52)
    rgb, _ = _render(_plain_room(), (x, 0.0, z), 180.0, size=size)  # the +Z wall: lit by the fill light, not the key
    back = _expected_colour((0.8, 0.8, 0.7), np.array([0.0, 0.0, -1.0]), -1.0, np.array([x, 1.25, 8.0]), 8.0 - z)
    np.testing.assert_allclose(rgb[size // 2, size // 2], back, atol=0.52)


def test_texture_patterns_follow_their_period_in_the_surface_plane() -> None:
    """Stripes alternate every 0.15 m along a wall, tiles every 0.3 m with dark grout at their start."""
    from asgf_nav.scenes.mesh import PATTERN_CODES
    from asgf_nav.scenes.render import texture_factor

    wall_z = np.array([[0.0, 0.0, 1.0]] * 4)  # a wall facing +z: x runs along it, y up it
    points = np.array([[0.05, 1.0, 2.0], [0.2, 1.0, 2.0], [0.35, 1.0, 9.0], [0.5, 1.0, 9.0]])
    stripes = np.full(4, PATTERN_CODES["stripes"])
    np.testing.assert_allclose(texture_factor(stripes, points, wall_z), [1.0, 0.86, 1.0, 0.86])
    wall_x = np.array([[1.0, 0.0, 0.0]] * 4)  # a wall facing +x: z runs along it
    along_z = points[:, [2, 1, 0]]
    np.testing.assert_allclose(texture_factor(stripes, along_z, wall_x), [1.0, 0.86, 1.0, 0.86])
    checker = np.full(3, PATTERN_CODES["checker"])
    tiles = np.array([[0.15, 0.0, 0.15], [0.45, 0.0, 0.15], [0.61, 0.0, 0.15]])  # a floor: x and z in its plane
    floor = np.array([[0.0, 1.0, 0.0]] * 3)
    np.testing.assert_allclose(texture_factor(checker, tiles, floor), [1.0, 0.88, 0.65])


def test_positions_and_yaws_of_different_counts_are_refused() -> None:
    """Each view needs one position and one yaw; a mismatch is named, not broadcast."""
    renderer = RayRenderer(floorplan_mesh(_box_room()), 8)
    with pytest.raises(ValueError, match="2 positions but 1 yaws"):
        renderer.render(np.zeros((2, 3)), np.array([0.0]))
    with pytest.raises(ValueError, match="image_size must be positive, got 0"):
        RayRenderer(floorplan_mesh(_box_room()), 0)


def test_the_first_triangle_of_a_mesh_is_seen(tmp_path: Path) -> None:
    """A mesh of one triangle (face index 0) 2 m ahead fills the centre with depth 2 m and its colour."""
    mesh = trimesh.Trimesh(
        vertices=[[-5.0, -3.0, -2.0], [5.0, -3.0, -2.0], [0.0, 6.0, -2.0]],
        faces=[[0, 1, 2]],
        vertex_colors=[[255, 0, 0, 255]] * 3,
        process=False,
    )
    path = tmp_path / "one.ply"
    mesh.export(path)
    rgb, depth = render_mesh_file(path, np.zeros((1, 3)), np.array([0.0]), image_size=9)
    assert depth[0, 4, 4] == pytest.approx(2.0, abs=1e-5)
    assert rgb[0, 4, 4, 0] > 100 and rgb[0, 4, 4, 1] < 60


def test_render_mesh_file_uses_the_given_camera_height_and_field_of_view(tmp_path: Path) -> None:
    """On a floor plane, the bottom centre pixel of a 9-pixel image sees the floor at z-depth
    h / (c * tan(hfov / 2)), c = 8.5 / 9 * 2 - 1 its image-plane offset: 0.5 m high with a 60 degree view here."""
    floor = trimesh.Trimesh(
        vertices=[[-50.0, 0.0, -50.0], [50.0, 0.0, -50.0], [50.0, 0.0, 50.0], [-50.0, 0.0, 50.0]],
        faces=[[0, 1, 2], [0, 2, 3]],
        vertex_colors=[[200, 200, 200, 255]] * 4,
        process=False,
    )
    path = tmp_path / "floor.ply"
    floor.export(path)
    _, depth = render_mesh_file(path, np.zeros((1, 3)), np.array([0.0]), image_size=9, hfov=60.0, camera_height=0.5)
    offset = (8.5 / 9 * 2 - 1) * np.tan(np.deg2rad(30.0))
    assert depth[0, -1, 4] == pytest.approx(0.5 / offset, rel=1e-5)
    assert np.all(depth[0, :4] == 0)  # at and above the horizon no ray meets the floor


def test_a_fractional_yaw_is_rendered_at_that_yaw() -> None:
    """A yaw of 30.4 degrees is not rounded to 30: straight ahead the -Z wall 3 m away lies 3 / cos(30.4 deg)
    along the optical axis."""
    size = 33
    _, depth = _render(_box_room(), (2.0, 0.0, 3.0), 30.4, size=size)
    assert depth[size // 2, size // 2] == pytest.approx(3.0 / np.cos(np.deg2rad(30.4)), rel=1e-5)


def test_task_scene_refuses_views_without_one_per_yaw() -> None:
    """A task scene's views hold one image per node and per yaw (N, 4, ...): views of 3 yaws are refused."""
    from asgf_nav.tasks.world import TaskScene

    def scene(**views: np.ndarray) -> TaskScene:
        return TaskScene(
            name="s",
            dataset="d",
            grid_size=0.5,
            positions=np.zeros((2, 3), dtype=np.float32),
            neighbors=np.full((2, 4), -1),
            geodesic_hops=np.zeros((2, 2), dtype=np.int16),
            source_nodes=np.arange(2),
            sample_rate=16000,
            rir=lambda receiver, source, yaw: np.zeros((1, 2), dtype=np.float32),
            **views,
        )

    assert scene(rgb=np.zeros((2, 4, 8, 8, 3), np.uint8), depth=np.zeros((2, 4, 8, 8), np.float16)).num_nodes == 2
    with pytest.raises(ValueError, match=r"rgb must start with \(2, 4\), got \(2, 3, 8, 8, 3\)"):
        scene(rgb=np.zeros((2, 3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"depth must start with \(2, 4\), got \(2, 3, 8, 8\)"):
        scene(depth=np.zeros((2, 3, 8, 8), np.float16))


@pytest.mark.parametrize("hfov", [0.0, 180.0, 200.0, -90.0])
def test_a_field_of_view_outside_0_to_180_degrees_is_refused(hfov: float) -> None:
    """At 180 degrees or more the pinhole image flips; at 0 every ray is the optical axis."""
    with pytest.raises(ValueError, match=f"hfov must be between 0 and 180 degrees .*got {hfov}"):
        pixel_offsets(8, hfov)
