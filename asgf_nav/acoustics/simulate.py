"""Omnidirectional room acoustics of a whole floor plan with pyroomacoustics (image sources + ray tracing).

One simulation per source serves every receiver: the image-source model gives each receiver its list of
visible specular paths (delay, direction of arrival, per-band amplitude) up to ``ism_order``; ray tracing
gives the energy of everything later as a per-band histogram over time. :mod:`binaural` turns both into
binaural impulse responses for any head orientation.

Geometry: the free-space polygon of the floor plan (rooms plus doorway gaps) extruded to the ceiling;
doorways are closed above the door height by a lintel; furniture boxes become absorbing obstacles.
pyroomacoustics works in a Z-up frame, so habitat (x, y, z) maps to (x, z, y) there.

pyroomacoustics 0.10.1 visibility bug (LCAV/pyroomacoustics#441): when no image source is visible from
any receiver it stores visibility as int32 zeros, which its own RIR code then uses as an index and so
re-inserts the blocked direct path at full strength (or fails on an empty array with several
receivers). This module never uses that path: it reads the image sources itself and treats that case as
"no visible path", so a hidden receiver hears only what ray tracing carries to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry import box as shapely_box
from shapely.ops import split as shapely_split

from asgf_nav.scenes.floorplan import OCTAVE_BANDS, Box, FloorPlan

logger = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0
HIST_BIN_SECONDS = 0.004
RECEIVER_RADIUS = 0.5  # ray-tracing receiver sphere (m)
_EPS = 1e-6


# --------------------------------------------------------------------------------------------- results
@dataclass
class SourceField:
    """Acoustic response of one source at R receivers, in pyroomacoustics amplitude units (1/distance).

    Image sources are stored flat; receiver r owns rows ``offsets[r]:offsets[r + 1]``.
    """

    sample_rate: int
    band_centers: np.ndarray  # (B,) Hz
    offsets: np.ndarray  # (R + 1,) int64
    delay: np.ndarray  # (N,) seconds from emission
    azimuth: np.ndarray  # (N,) world yaw angle (deg) at which an agent faces the arriving path
    elevation: np.ndarray  # (N,) degrees above horizontal
    band_amplitude: np.ndarray  # (N, B) amplitude per octave band
    histogram: np.ndarray  # (R, B, bins) late energy per band per HIST_BIN_SECONDS bin, from emission
    audible: np.ndarray  # (R,) bool: receiver lies in the source's free space

    @property
    def num_receivers(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def images(self, receiver: int) -> slice:
        return slice(int(self.offsets[receiver]), int(self.offsets[receiver + 1]))


def band_centers(sample_rate: int) -> np.ndarray:
    """Octave band centres pyroomacoustics uses at ``sample_rate`` (125 Hz up to below Nyquist)."""
    return np.asarray(pra.acoustics.OctaveBandsFactory(fs=sample_rate, base_frequency=125).centers, dtype=float)


def _band_values(values: tuple[float, ...], centers: np.ndarray) -> np.ndarray:
    """Per-band coefficients of the floor plan (OCTAVE_BANDS) on pyroomacoustics' bands, ends held."""
    return np.interp(np.log2(centers), np.log2(np.asarray(OCTAVE_BANDS, dtype=float)), np.asarray(values))


# --------------------------------------------------------------------------------------------- geometry
def _to_pra(x: float, z: float, height: float) -> list[float]:
    return [x, z, height]


def _polygons(geometry) -> list[Polygon]:
    """The polygons of a Polygon, MultiPolygon or GeometryCollection."""
    if geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    if not hasattr(geometry, "geoms"):  # a line or point where two parts touch
        return []
    return [g for part in geometry.geoms for g in _polygons(part)]


def _simple_pieces(geometry) -> list[Polygon]:
    """Split a (multi)polygon into simple polygons without holes (pyroomacoustics walls have none)."""
    pending = _polygons(geometry)
    done: list[Polygon] = []
    while pending:
        poly = pending.pop()
        if poly.is_empty or poly.area < 1e-6:
            continue
        if not poly.interiors:
            done.append(poly.simplify(0))
            continue
        hole = Polygon(poly.interiors[0])
        cx = hole.centroid.x
        x0, z0, x1, z1 = poly.bounds
        pending.extend(_polygons(shapely_split(poly, LineString([(cx, z0 - 1), (cx, z1 + 1)]))))
    return done


def _ring_coords(poly: Polygon) -> list[tuple[float, float]]:
    coords = list(poly.exterior.coords)[:-1]
    return [(float(x), float(z)) for x, z in coords]


class _WallBuilder:
    """Collects pyroomacoustics walls, orienting each so that its normal points out of the free air."""

    def __init__(self, fp: FloorPlan, centers: np.ndarray, scattering: bool = True) -> None:
        self.fp = fp
        self.centers = centers
        self.walls: list = []
        self.scattering_scale = 1.0 if scattering else 0.0

    def add(self, corners: list[list[float]], material: str, outward: np.ndarray) -> None:
        mat = self.fp.material(material)
        absorption = np.clip(_band_values(mat.absorption, self.centers), 0.0, 0.99)
        scattering = np.full(len(self.centers), float(np.clip(mat.scattering, 0.0, 1.0)) * self.scattering_scale)
        pts = np.asarray(corners, dtype=float).T  # (3, n)
        wall = pra.wall_factory(pts, absorption, scattering, name=material)
        if float(np.dot(wall.normal, outward)) < 0:
            wall = pra.wall_factory(pts[:, ::-1].copy(), absorption, scattering, name=material)
        self.walls.append(wall)

    def horizontal(self, poly: Polygon, height: float, material: str, up: bool) -> None:
        ring = _ring_coords(poly)
        self.add([_to_pra(x, z, height) for x, z in ring], material, np.array([0, 0, 1.0 if up else -1.0]))

    def vertical(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        y0: float,
        y1: float,
        material: str,
        outward_xz: np.ndarray,
    ) -> None:
        corners = [_to_pra(*a, y0), _to_pra(*b, y0), _to_pra(*b, y1), _to_pra(*a, y1)]
        self.add(corners, material, np.array([outward_xz[0], outward_xz[1], 0.0]))


def _door_box(d) -> Polygon:
    return shapely_box(round(d.x0, 4), round(d.z0, 4), round(d.x1, 4), round(d.z1, 4))


def _wall_material_at(fp: FloorPlan, x: float, z: float) -> str:
    """Material of the wall box touching point (x, z); the nearest room's wall material otherwise."""
    for w in fp.walls:
        if w.contains_xz(x, z, margin=0.02):
            return w.material
    best = min(fp.rooms, key=lambda r: Point(x, z).distance(shapely_box(r.x0, r.z0, r.x1, r.z1)))
    return best.wall_material


def _floor_material_at(fp: FloorPlan, x: float, z: float) -> str:
    best = min(fp.rooms, key=lambda r: Point(x, z).distance(shapely_box(r.x0, r.z0, r.x1, r.z1)))
    return best.floor_material


def _doorway_floor_material(fp: FloorPlan, x: float, z: float) -> str:
    """Floor material of the doorway gap holding (x, z): its first room's, as the renderer's doorway slab.

    A gap lies between its two rooms, 0.06 m from each, so "the nearest room" would be decided by float noise.
    Points in no doorway fall back to the nearest room's floor.
    """
    floor_of = {r.name: r.floor_material for r in fp.rooms}
    for d in fp.doorways:
        if _door_box(d).buffer(_EPS).contains(Point(x, z)):
            return floor_of[d.rooms[0]]
    return _floor_material_at(fp, x, z)


def _floor_parts(fp: FloorPlan, floor) -> list[tuple[str, Polygon]]:
    """``floor`` cut into each room's part, in that room's floor material; a doorway gap takes the floor of
    its first room (``Doorway.rooms[0]``), as :func:`asgf_nav.scenes.mesh.floorplan_mesh` draws it.

    The free space of a connected plan is one polygon: without the cut, the whole floor would get the material
    of whichever room its representative point falls in.
    """
    parts: list[tuple[str, Polygon]] = []
    rest = floor
    for r in fp.rooms:
        cell = shapely_box(*(round(v, 4) for v in (r.x0, r.z0, r.x1, r.z1)))
        parts += [(r.floor_material, g) for g in _polygons(rest.intersection(cell))]  # overlaps counted once
        rest = rest.difference(cell)
    for g in _polygons(rest):
        c = g.representative_point()
        parts.append((_doorway_floor_material(fp, c.x, c.y), g))
    return parts


def _obstacles(fp: FloorPlan, free, ceiling: float) -> list[Box]:
    """Furniture boxes clear of walls and ceiling (shrunk away from walls so no faces coincide)."""
    inner = free.buffer(-0.03, join_style="mitre")
    kept = []
    for f in fp.furniture:
        clipped = shapely_box(f.x0, f.z0, f.x1, f.z1).intersection(inner)
        if clipped.is_empty or clipped.geom_type != "Polygon" or abs(clipped.area - clipped.envelope.area) > 1e-6:
            continue
        x0, z0, x1, z1 = clipped.bounds
        top = min(f.y1, ceiling - 0.05)
        if x1 - x0 < 0.1 or z1 - z0 < 0.1 or top < 0.1:
            continue
        kept.append(Box(x0, z0, x1, z1, 0.0, top, f.material, f.kind))
    return kept


def build_walls(fp: FloorPlan, sample_rate: int, region=None, furniture: bool = True, scattering: bool = True) -> list:
    """pyroomacoustics walls enclosing ``region`` (default: the whole free space) of floor plan ``fp``.

    ``scattering=False`` zeroes the materials' scattering coefficients (used for the specular ray tracer).
    """
    centers = band_centers(sample_rate)
    free = region if region is not None else fp.free_space_polygon()
    height = fp.ceiling_height
    builder = _WallBuilder(fp, centers, scattering)
    low_doors = [d for d in fp.doorways if d.height < height - 1e-3]
    door_polys = [_door_box(d).intersection(free) for d in low_doors]

    obstacles = _obstacles(fp, free, height) if furniture else []
    floor = free
    for f in obstacles:  # the floor under an obstacle is inside the obstacle, not a boundary of the air
        floor = floor.difference(shapely_box(f.x0, f.z0, f.x1, f.z1))
    for material, part in _floor_parts(fp, floor):
        for piece in _simple_pieces(part):
            builder.horizontal(piece, 0.0, material, up=False)
    rooms_part = free
    for dp in door_polys:
        rooms_part = rooms_part.difference(dp)
    for piece in _simple_pieces(rooms_part):  # ceiling
        builder.horizontal(piece, height, fp.ceiling_material, up=True)

    for d, dp in zip(low_doors, door_polys):  # ceiling of each doorway gap and the lintel faces above it
        if dp.is_empty or dp.area < 1e-6:
            continue
        for piece in _simple_pieces(dp):
            c = piece.representative_point()
            lintel_material = _wall_material_at(fp, c.x, c.y)
            builder.horizontal(piece, d.height, lintel_material, up=True)
            ring = _ring_coords(piece)
            for a, b in zip(ring, ring[1:] + ring[:1]):
                mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
                if free.exterior.distance(Point(mid)) < _EPS or any(
                    LineString(i.coords).distance(Point(mid)) < _EPS for i in free.interiors
                ):
                    continue  # a jamb, handled with the boundary below
                normal = _edge_normal(a, b)
                probe = Point(mid[0] + 0.01 * normal[0], mid[1] + 0.01 * normal[1])
                outward = normal if piece.contains(probe) else -normal
                builder.vertical(a, b, d.height, height, lintel_material, outward)

    door_boxes = [(_door_box(d), d.height) for d in low_doors]
    cut_x = sorted({round(v, 4) for d in low_doors for v in (d.x0, d.x1)})
    cut_z = sorted({round(v, 4) for d in low_doors for v in (d.z0, d.z1)})
    rings = [free.exterior, *free.interiors]
    for ring in rings:  # vertical walls along the boundary, split where doorway jambs begin
        coords = [(float(x), float(z)) for x, z in ring.coords]
        for a, b in zip(coords[:-1], coords[1:]):
            for pa, pb in _split_segment(a, b, cut_x, cut_z):
                mid = ((pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2)
                normal = _edge_normal(pa, pb)
                probe = Point(mid[0] + 0.01 * normal[0], mid[1] + 0.01 * normal[1])
                outward = -normal if free.contains(probe) else normal
                top = height
                for dbox, dh in door_boxes:
                    if dbox.buffer(_EPS).contains(Point(mid)):
                        top = dh
                builder.vertical(pa, pb, 0.0, top, _wall_material_at(fp, *mid), outward)

    for f in obstacles:
        corners_xz = [(f.x0, f.z0), (f.x1, f.z0), (f.x1, f.z1), (f.x0, f.z1)]
        builder.horizontal(Polygon(corners_xz), f.y1, f.material, up=False)  # top faces down into the box
        for a, b in zip(corners_xz, corners_xz[1:] + corners_xz[:1]):
            normal = _edge_normal(a, b)
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            inside = shapely_box(f.x0, f.z0, f.x1, f.z1).contains(
                Point(mid[0] + 0.01 * normal[0], mid[1] + 0.01 * normal[1])
            )
            builder.vertical(a, b, 0.0, f.y1, f.material, normal if inside else -normal)
    return builder.walls


def _edge_normal(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    d = np.array([b[0] - a[0], b[1] - a[1]], dtype=float)
    n = np.array([d[1], -d[0]])
    return n / max(np.linalg.norm(n), 1e-12)


def _split_segment(a, b, cut_x: list[float], cut_z: list[float]) -> list[tuple]:
    """Split an axis-aligned boundary segment at the given x (or z) coordinates."""
    if abs(a[1] - b[1]) < _EPS:  # along x
        lo, hi = sorted((a[0], b[0]))
        cuts = [lo] + [c for c in cut_x if lo + 1e-4 < c < hi - 1e-4] + [hi]
        pieces = [((cuts[i], a[1]), (cuts[i + 1], a[1])) for i in range(len(cuts) - 1)]
        return pieces if a[0] < b[0] else [(q, p) for p, q in reversed(pieces)]
    if abs(a[0] - b[0]) < _EPS:  # along z
        lo, hi = sorted((a[1], b[1]))
        cuts = [lo] + [c for c in cut_z if lo + 1e-4 < c < hi - 1e-4] + [hi]
        pieces = [((a[0], cuts[i]), (a[0], cuts[i + 1])) for i in range(len(cuts) - 1)]
        return pieces if a[1] < b[1] else [(q, p) for p, q in reversed(pieces)]
    return [(a, b)]


# --------------------------------------------------------------------------------------------- simulation
def effective_ism_order(num_walls: int, ism_order: int, max_images: int) -> int:
    """Highest order <= ``ism_order`` whose image tree (~walls**order) stays within ``max_images``.

    pyroomacoustics' image-source search on a general polyhedron costs about walls**order x receivers x
    walls; a multi-room plan with ~130 faces at order 3 takes minutes per source. Ray tracing carries
    every reflection above the order used here, so lowering it moves energy from exact specular paths to
    the statistical tail rather than losing it.
    """
    order = max(0, int(ism_order))
    while order > 1 and float(num_walls) ** order > max_images:
        order -= 1
    return order


def _ray_trace(fp, region, furniture, sample_rate, first_order, rays, max_seconds, source, mics):
    """Specular ray tracing (scattering off): late energy histograms per receiver of the reflections from
    ``first_order`` bounces on, or None without rays.

    pyroomacoustics' diffuse-rain scattering costs receivers x walls per bounce (60x slower measured on a
    300-receiver apartment), so the tracer runs specular with 0.5 m receiver spheres, affordable for every
    grid node at once. The price: nothing mixes the rays' directions, so the tails decay 2-4x (with
    absorbing floors and ceilings far more) slower than with scattering (docs/acoustics.md, Known limits).
    """
    if rays <= 0:
        return None
    walls = build_walls(fp, sample_rate, region=region, furniture=furniture, scattering=False)
    # pyroomacoustics' tracer logs a ray once it has made max_order bounces (its hybrid's image sources hold
    # the orders below), so max_order is the first order logged
    room = pra.Room(walls, fs=sample_rate, max_order=first_order, air_absorption=False)
    room.set_ray_tracing(
        n_rays=rays,
        receiver_radius=RECEIVER_RADIUS,
        hist_bin_size=HIST_BIN_SECONDS,
        energy_thres=1e-7,
        time_thres=max_seconds,
    )
    room.sources.append(pra.SoundSource(source[[0, 2, 1]]))
    room.add_microphone_array(pra.MicrophoneArray(mics.T, sample_rate))
    room.ray_tracing()
    return room.rt_histograms


def simulate_source(
    fp: FloorPlan,
    source: np.ndarray,
    receivers: np.ndarray,
    sample_rate: int,
    ism_order: int = 3,
    rays: int = 3000,
    max_seconds: float = 1.0,
    furniture: bool = True,
    max_images: int = 30000,
) -> SourceField:
    """Simulate one omnidirectional source heard at many omnidirectional receivers.

    ``source`` (3,) and ``receivers`` (R, 3) are habitat positions at ear height. Receivers outside the
    source's connected free space (or inside an obstacle) get no images and an empty histogram. Nothing
    is random: the image sources are exact and the specular tracer casts a fixed set of rays, so the same
    inputs give the same field.
    """
    source = np.asarray(source, dtype=float)
    receivers = np.atleast_2d(np.asarray(receivers, dtype=float))
    centers = band_centers(sample_rate)
    n_bands = len(centers)
    n_bins = int(np.ceil(max_seconds / HIST_BIN_SECONDS))
    free = fp.free_space_polygon()
    region = next((g for g in _polygons(free) if g.buffer(_EPS).contains(Point(source[0], source[2]))), None)
    if region is None:
        raise ValueError(f"floor plan {fp.name!r}: source {source.tolist()} is outside the free space")
    obstacles = _obstacles(fp, region, fp.ceiling_height) if furniture else []
    audible = np.array(
        [
            region.contains(Point(r[0], r[2]))
            and 0.0 < r[1] < fp.ceiling_height
            and not any(b.contains_xz(r[0], r[2]) and r[1] < b.y1 for b in obstacles)
            for r in receivers
        ],
        dtype=bool,
    )

    offsets = np.zeros(len(receivers) + 1, dtype=np.int64)
    histogram = np.zeros((len(receivers), n_bands, n_bins), dtype=np.float64)
    empty = SourceField(
        sample_rate,
        centers,
        offsets,
        np.zeros(0),
        np.zeros(0),
        np.zeros(0),
        np.zeros((0, n_bands)),
        histogram,
        audible,
    )
    if not audible.any():
        return empty

    walls = build_walls(fp, sample_rate, region=region, furniture=furniture)
    order = effective_ism_order(len(walls), ism_order, max_images)
    room = pra.Room(walls, fs=sample_rate, max_order=order, air_absorption=False)
    # Hybrid flag on: the engine then scales each reflection by sqrt(1 - scattering), the specular share.
    room.set_ray_tracing(n_rays=max(rays, 1), receiver_radius=RECEIVER_RADIUS, hist_bin_size=HIST_BIN_SECONDS)
    mics = receivers[audible][:, [0, 2, 1]]
    room.sources.append(pra.SoundSource(source[[0, 2, 1]]))  # Room.add_source's inside test is randomised
    room.add_microphone_array(pra.MicrophoneArray(mics.T, sample_rate))

    # The image-source engine is called directly: Room.image_source_model() re-checks each receiver with a
    # randomised point-in-polyhedron test that misfires on concave plans, and mishandles "nothing visible".
    n_visible = room.room_engine.image_source_model(room.sources[0].position)
    if n_visible > 0:
        images = np.array(room.room_engine.sources, dtype=float)
        damping = np.array(room.room_engine.attenuations, dtype=float)
        visibility = np.array(room.room_engine.visible_mics, dtype=bool)
        if damping.shape[0] == 1:
            damping = np.repeat(damping, n_bands, axis=0)
    else:
        images = np.zeros((3, 0))
        damping = np.zeros((n_bands, 0))
        visibility = np.zeros((len(mics), 0), dtype=bool)

    # the tracer logs a ray from as many bounces as its room's max_order on: one more than the image sources',
    # so that the tail starts after the last reflection they hold (before ACOUSTICS_VERSION 3 both held it)
    rt_histograms = _ray_trace(fp, region, furniture, sample_rate, order + 1, rays, max_seconds, source, mics)

    delays, azimuths, elevations, amps = [], [], [], []
    counts = np.zeros(len(receivers), dtype=np.int64)
    for m, r in enumerate(np.flatnonzero(audible)):
        vis = visibility[m]
        vec = images[:, vis] - mics[m][:, None]  # pra frame (x, z_h, y_h)
        dist = np.linalg.norm(vec, axis=0)
        keep = (dist > 1e-3) & (dist / SPEED_OF_SOUND < max_seconds)
        vec, dist = vec[:, keep], dist[keep]
        dx, dz, dy = vec
        delays.append(dist / SPEED_OF_SOUND)
        azimuths.append(np.rad2deg(np.arctan2(-dx, -dz)) % 360.0)
        elevations.append(np.rad2deg(np.arctan2(dy, np.hypot(dx, dz))))
        amps.append((damping[:, vis][:, keep] / dist).T)
        counts[r] = int(keep.sum())
        if rt_histograms is not None:
            hist = np.asarray(rt_histograms[m][0][0], dtype=float)
            if hist.ndim == 1:
                hist = np.repeat(hist[None], n_bands, axis=0)
            width = min(hist.shape[-1], n_bins)
            histogram[r, :, :width] = hist[:, :width]
    offsets[1:] = np.cumsum(counts)
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    return SourceField(
        sample_rate=sample_rate,
        band_centers=centers,
        offsets=offsets,
        delay=cat(delays, (0,)),
        azimuth=cat(azimuths, (0,)),
        elevation=cat(elevations, (0,)),
        band_amplitude=cat(amps, (0, n_bands)),
        histogram=histogram,
        audible=audible,
    )
