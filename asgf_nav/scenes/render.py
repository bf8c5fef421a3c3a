"""Egocentric RGB-D rendering by ray casting (trimesh + Embree): exact depth, no GL, pip-only.

The camera follows habitat's pinhole sensor: square image, horizontal field of view ``hfov``, placed
``camera_height`` metres above the agent's floor position, looking along the agent's yaw (yaw 0 faces
-Z). Depth is the distance along the optical axis (z-depth, as habitat's depth sensor), 0 where a ray
hits nothing. Colour is computed per hit from the surface's base colour and procedural texture (planks,
tiles, stripes, speckle evaluated at the hit point), two directional lights plus a camera light, a
darkening near the floor and a little distance haze, so walls, floors, furniture and doorways remain
distinguishable. All rays of a batch of views go to Embree in one call; shading is vectorised numpy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asgf_nav.logging_utils import bar_disabled
from asgf_nav.scenes.mesh import PATTERN_CODES, SceneMesh, load_mesh_file

logger = logging.getLogger(__name__)

DEFAULT_HFOV = 90.0
DEFAULT_CAMERA_HEIGHT = 1.25
VIEWS_PER_BATCH = 16
_KEY_LIGHT = (np.array([0.4, 0.85, 0.35]) / np.linalg.norm([0.4, 0.85, 0.35])).astype(np.float32)
_FILL_LIGHT = (np.array([-0.6, 0.3, -0.75]) / np.linalg.norm([-0.6, 0.3, -0.75])).astype(np.float32)
_HAZE_COLOR = np.array([0.78, 0.79, 0.82], dtype=np.float32)
_HAZE_DISTANCE = 25.0


def camera_basis(yaw_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors (habitat coordinates) of a camera at ``yaw_deg``."""
    r = np.deg2rad(yaw_deg)
    forward = np.array([-np.sin(r), 0.0, -np.cos(r)])
    right = np.array([np.cos(r), 0.0, -np.sin(r)])
    return forward, right, np.array([0.0, 1.0, 0.0])


def pixel_offsets(image_size: int, hfov: float = DEFAULT_HFOV) -> tuple[np.ndarray, np.ndarray]:
    """Image-plane offsets (u right, v up) of pixel centres at unit distance, each (H, W)."""
    if not 0 < hfov < 180:
        raise ValueError(f"hfov must be between 0 and 180 degrees (exclusive), got {hfov}")
    half = np.tan(np.deg2rad(hfov) / 2)
    centres = (np.arange(image_size) + 0.5) / image_size * 2 - 1
    u = np.broadcast_to(centres[None, :] * half, (image_size, image_size))
    v = np.broadcast_to(-centres[:, None] * half, (image_size, image_size))
    return u, v


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """Deterministic per-cell pseudo-random value in [0, 1) from integer cell coordinates."""
    h = np.zeros(np.broadcast(*ints).shape, dtype=np.uint32)
    for k, a in zip((0x8DA6B343, 0xD8163841, 0xCB1AB31F), ints):
        h ^= (a.astype(np.int64) * k & 0xFFFFFFFF).astype(np.uint32)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(0x5BD1E995)
    h ^= h >> np.uint32(15)
    return (h & np.uint32(0xFFFF)).astype(np.float32) / 65536.0


def texture_factor(patterns: np.ndarray, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Brightness multiplier of each hit from its material pattern, evaluated in the surface plane."""
    axis = np.abs(normals).argmax(axis=1)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    u = np.where(axis == 0, z, x)  # along the surface, horizontal
    v = np.where(axis == 1, z, y)  # along the surface, vertical on walls
    f = np.ones(len(points), dtype=np.float32)

    m = patterns == PATTERN_CODES["plain"]
    f[m] = 0.97 + 0.03 * np.sin(u[m] * 1.3) * np.sin(v[m] * 1.7)

    m = patterns == PATTERN_CODES["stripes"]
    f[m] = np.where(np.floor(u[m] / 0.15) % 2 == 0, 1.0, 0.86)

    m = patterns == PATTERN_CODES["checker"]
    tu, tv = u[m] / 0.3, v[m] / 0.3
    tile = np.where((np.floor(tu) + np.floor(tv)) % 2 == 0, 1.0, 0.88)
    grout = (tu - np.floor(tu) < 0.04) | (tv - np.floor(tv) < 0.04)
    f[m] = np.where(grout, 0.65, tile)

    m = patterns == PATTERN_CODES["planks"]
    if m.any():
        row = np.floor(v[m] / 0.18).astype(np.int64)
        shifted = u[m] + _hash01(row) * 1.2
        board = np.floor(shifted / 1.2).astype(np.int64)
        joint = (v[m] / 0.18 - row < 0.06) | (shifted / 1.2 - board < 0.015)
        grain = 1.0 + 0.05 * np.sin(shifted * 37.0 + row * 1.7)
        f[m] = np.where(joint, 0.6, (0.82 + 0.3 * _hash01(row, board)) * grain)

    m = patterns == PATTERN_CODES["speckle"]
    if m.any():
        cells = np.floor(points[m] / 0.025).astype(np.int64)
        f[m] = 0.82 + 0.3 * _hash01(cells[:, 0], cells[:, 1], cells[:, 2])
    return f


def _embree_scene(scene: SceneMesh):  # noqa: ANN202 - embreex has no type stubs
    """Embree acceleration structure of the mesh (single precision, as Embree works)."""
    try:
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh
    except ImportError as exc:
        raise ImportError("rendering needs the embreex package (pip install embreex)") from exc
    embree = rtcore_scene.EmbreeScene()
    vertices = np.ascontiguousarray(scene.mesh.vertices, dtype=np.float32)
    faces = np.ascontiguousarray(scene.mesh.faces, dtype=np.int32)
    TriangleMesh(scene=embree, vertices=vertices, indices=faces)
    return embree


class RayRenderer:
    """Renders egocentric RGB-D views of one :class:`SceneMesh`."""

    def __init__(
        self,
        scene: SceneMesh,
        image_size: int = 128,
        hfov: float = DEFAULT_HFOV,
        camera_height: float = DEFAULT_CAMERA_HEIGHT,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.scene = scene
        self.image_size = int(image_size)
        self.hfov = float(hfov)
        self.camera_height = float(camera_height)
        self._u, self._v = pixel_offsets(self.image_size, self.hfov)
        self._embree = _embree_scene(scene)
        self._normals = np.asarray(scene.mesh.face_normals, dtype=np.float32)
        self._ray_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _view_rays(self, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """Unit ray directions (H*W, 3) float32 and z-depth per unit ray length (H*W,) for one yaw."""
        key = round(float(yaw) % 360.0, 6)
        if key not in self._ray_cache:
            f, r, up = camera_basis(key)
            d = (f[None, None] + self._u[..., None] * r + self._v[..., None] * up).reshape(-1, 3)
            length = np.linalg.norm(d, axis=1)
            self._ray_cache[key] = ((d / length[:, None]).astype(np.float32), (1.0 / length).astype(np.float32))
        return self._ray_cache[key]

    def render(self, positions: np.ndarray, yaws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB (V, H, W, 3) uint8 and depth (V, H, W) float32 metres for agent floor positions and yaws."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        yaws = np.asarray(yaws, dtype=np.float64).reshape(-1)
        if len(positions) != len(yaws):
            raise ValueError(f"{len(positions)} positions but {len(yaws)} yaws")
        h = w = self.image_size
        npix = h * w
        views = [self._view_rays(yaw) for yaw in yaws]
        unit = np.concatenate([v[0] for v in views])
        axial = np.concatenate([v[1] for v in views])
        cameras = (positions + np.array([0.0, self.camera_height, 0.0])).astype(np.float32)
        origins = np.repeat(cameras, npix, axis=0)
        hits = self._embree.run(origins, unit, output=1)
        ray = np.flatnonzero(hits["primID"] >= 0)
        tri = hits["primID"][ray]
        dist = hits["tfar"][ray].astype(np.float32)
        loc = origins[ray] + unit[ray] * dist[:, None]
        depth = np.zeros(len(origins), dtype=np.float32)
        rgb = np.zeros((len(origins), 3), dtype=np.float32)
        if len(ray):
            depth[ray] = dist * axial[ray]
            rgb[ray] = self._shade(tri, loc, unit[ray], depth[ray])
        rgb8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        return rgb8.reshape(-1, h, w, 3), depth.reshape(-1, h, w)

    def _shade(self, tri: np.ndarray, points: np.ndarray, view: np.ndarray, depth: np.ndarray) -> np.ndarray:
        normals = self._normals[tri]
        facing = np.einsum("ij,ij->i", normals, view)
        normals = normals * np.where(facing > 0, np.float32(-1), np.float32(1))[:, None]  # two-sided
        light = (
            0.38
            + 0.34 * np.clip(normals @ _KEY_LIGHT, 0, None)
            + 0.14 * np.clip(normals @ _FILL_LIGHT, 0, None)
            + 0.22 * np.abs(facing)
        )
        vertical = np.abs(normals[:, 1]) < 0.5
        occlusion = np.where(vertical, 1.0 - 0.3 * np.exp(-np.clip(points[:, 1], 0, None) / 0.12), 1.0)
        texture = texture_factor(self.scene.face_patterns[tri], points, normals)
        color = self.scene.face_colors[tri] * (light * occlusion * texture)[:, None]
        haze = (1.0 - np.exp(-np.maximum(depth, 0) / _HAZE_DISTANCE))[:, None]
        return np.clip(color * (1 - haze) + _HAZE_COLOR * haze, 0.0, 1.0)

    def render_all(
        self, positions: np.ndarray, yaws: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0), progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB (N, Y, H, W, 3) uint8 and depth (N, Y, H, W) float32 for every position and every yaw."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        n, ny, s = len(positions), len(yaws), self.image_size
        rgb = np.zeros((n, ny, s, s, 3), dtype=np.uint8)
        depth = np.zeros((n, ny, s, s), dtype=np.float32)
        flat_pos = np.repeat(positions, ny, axis=0)
        flat_yaw = np.tile(np.asarray(yaws, dtype=np.float64), n)
        total = n * ny
        starts = range(0, total, VIEWS_PER_BATCH)
        for start in tqdm(starts, desc="render views", unit="batch", disable=bar_disabled(progress), leave=False):
            stop = min(start + VIEWS_PER_BATCH, total)
            c, d = self.render(flat_pos[start:stop], flat_yaw[start:stop])
            rgb.reshape(total, s, s, 3)[start:stop] = c
            depth.reshape(total, s, s)[start:stop] = d
        return rgb, depth


def render_mesh_file(
    path: str | Path,
    positions: np.ndarray,
    yaws: np.ndarray,
    image_size: int = 128,
    hfov: float = DEFAULT_HFOV,
    camera_height: float = DEFAULT_CAMERA_HEIGHT,
    up_axis: str = "y",
) -> tuple[np.ndarray, np.ndarray]:
    """Render views of a PLY / GLB scene from disk with the same camera as the baked scenes."""
    renderer = RayRenderer(load_mesh_file(path, up_axis=up_axis), image_size, hfov, camera_height)
    return renderer.render(np.asarray(positions), np.asarray(yaws))
