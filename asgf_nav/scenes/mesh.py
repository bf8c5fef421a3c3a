"""Triangle meshes for rendering: built from a FloorPlan, or loaded from a PLY / GLB file on disk.

Both kinds end up as a :class:`SceneMesh`: a trimesh mesh plus, per face, a base colour and a texture
pattern code, so the renderer treats procedural and scanned scenes alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from asgf_nav.scenes.floorplan import Box, FloorPlan

logger = logging.getLogger(__name__)

PATTERNS: tuple[str, ...] = ("plain", "stripes", "checker", "planks", "speckle")
PATTERN_CODES: dict[str, int] = {name: code for code, name in enumerate(PATTERNS)}
DEFAULT_MESH_COLOR = (0.7, 0.7, 0.7)

# Corner k of a box has x from bit 0, y from bit 1, z from bit 2; triangles wound outward.
_BOX_CORNERS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=np.float64)
_BOX_FACES = np.array(
    [
        [0, 4, 6], [0, 6, 2],  # -x
        [1, 3, 7], [1, 7, 5],  # +x
        [0, 1, 5], [0, 5, 4],  # -y
        [2, 6, 7], [2, 7, 3],  # +y
        [0, 2, 3], [0, 3, 1],  # -z
        [4, 5, 7], [4, 7, 6],  # +z
    ],
    dtype=np.int64,
)  # fmt: skip


@dataclass
class SceneMesh:
    mesh: trimesh.Trimesh
    face_colors: np.ndarray  # (F, 3) float32 in [0, 1]
    face_patterns: np.ndarray  # (F,) int8 index into PATTERNS

    @property
    def num_faces(self) -> int:
        return int(len(self.mesh.faces))


def _boxes_to_arrays(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of boxes given as (B, 6) rows x0, y0, z0, x1, y1, z1."""
    lo, hi = bounds[:, None, :3], bounds[:, None, 3:]
    vertices = lo + _BOX_CORNERS[None] * (hi - lo)
    faces = _BOX_FACES[None] + 8 * np.arange(len(bounds))[:, None, None]
    return vertices.reshape(-1, 3), faces.reshape(-1, 3)


def floorplan_mesh(plan: FloorPlan) -> SceneMesh:
    """Boxes for walls, lintels and furniture; thin slabs for room floors, doorway floors and ceilings."""
    slab = 0.02
    entries: list[tuple[tuple[float, ...], str]] = []
    floor_of = {r.name: r.floor_material for r in plan.rooms}
    for r in plan.rooms:
        entries.append(((r.x0, -slab, r.z0, r.x1, 0.0, r.z1), r.floor_material))
        top = plan.ceiling_height
        entries.append(((r.x0, top, r.z0, r.x1, top + slab, r.z1), plan.ceiling_material))
    for d in plan.doorways:
        entries.append(((d.x0, -slab, d.z0, d.x1, 0.0, d.z1), floor_of[d.rooms[0]]))
    box: Box
    for box in [*plan.walls, *plan.furniture]:
        entries.append(((box.x0, box.y0, box.z0, box.x1, box.y1, box.z1), box.material))
    bounds = np.array([e[0] for e in entries], dtype=np.float64)
    vertices, faces = _boxes_to_arrays(bounds)
    colors, patterns = [], []
    for _, name in entries:
        material = plan.material(name)
        colors.append(material.color)
        if material.pattern not in PATTERN_CODES:
            raise ValueError(f"material {name!r} of {plan.name!r} has unknown pattern {material.pattern!r}")
        patterns.append(PATTERN_CODES[material.pattern])
    faces_per_box = len(_BOX_FACES)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    return SceneMesh(
        mesh=mesh,
        face_colors=np.repeat(np.asarray(colors, dtype=np.float32), faces_per_box, axis=0),
        face_patterns=np.repeat(np.asarray(patterns, dtype=np.int8), faces_per_box),
    )


def load_mesh_file(path: str | Path, up_axis: str = "y") -> SceneMesh:
    """Load a PLY / GLB / OBJ scene into habitat coordinates (Y up) with per-face colours.

    ``up_axis="z"`` converts a Z-up scan (as Replica / Matterport PLYs are) with (x, y, z) -> (x, z, -y).
    Face colours come from the file's face or vertex colours (textures are reduced to vertex colours);
    a mesh without colours renders light grey.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many exception types for unreadable files
        raise ValueError(f"cannot load mesh file {path}: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"mesh file {path} holds no triangles")
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    colors = _face_colors(mesh)
    if up_axis == "z":
        v = np.asarray(mesh.vertices)
        mesh = trimesh.Trimesh(vertices=np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1), faces=mesh.faces, process=False)
    return SceneMesh(mesh=mesh, face_colors=colors, face_patterns=np.zeros(len(mesh.faces), dtype=np.int8))


def _face_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    visual = mesh.visual
    try:
        if visual.kind == "texture":
            visual = visual.to_color()
        if visual.kind == "face":
            return (np.asarray(visual.face_colors)[:, :3] / 255.0).astype(np.float32)
        if visual.kind == "vertex":
            vc = np.asarray(visual.vertex_colors)[:, :3] / 255.0
            return vc[mesh.faces].mean(axis=1).astype(np.float32)
    except (AttributeError, ValueError, IndexError) as exc:
        logger.warning("mesh colours unreadable (%s); rendering it grey", exc)
    return np.tile(np.asarray(DEFAULT_MESH_COLOR, dtype=np.float32), (len(mesh.faces), 1))
