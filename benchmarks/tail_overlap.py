"""How much the ray-traced tail repeated the image sources' last order, before ACOUSTICS_VERSION 3.

pyroomacoustics' tracer logs a ray once it has made as many bounces as its room's ``max_order``. The bake
traced with the image sources' own order until version 3, so reflections of that order were in both the
specular paths and the tail; it now traces from one bounce more. In the empty shoebox room of
``reverberation_time.py`` (one receiver, seconds on one core) this prints, side by side for both ways, the
tail's energy that arrives before the first reflection past the image order can (where only the image sources
should speak), and the whole response's energy, per octave band and for image orders 1-3.

    python benchmarks/tail_overlap.py
"""

from __future__ import annotations

import argparse

import numpy as np
import pyroomacoustics as pra
from reverberation_time import EAR_HEIGHT, ROOM_DEFAULTS, shoebox

from asgf_nav.acoustics.simulate import (
    HIST_BIN_SECONDS,
    RECEIVER_RADIUS,
    SPEED_OF_SOUND,
    _ray_trace,
    band_centers,
    simulate_source,
)
from asgf_nav.cli import positive_int, run_script


def first_arrival(size, source: np.ndarray, receiver: np.ndarray, order: int, sample_rate: int) -> float:
    """Seconds until the first reflection of exactly ``order`` bounces reaches the receiver's centre."""
    room = pra.ShoeBox(list(size), fs=sample_rate, max_order=order)
    room.add_source(source[[0, 2, 1]])
    room.add_microphone(receiver[[0, 2, 1]])
    room.image_source_model()
    images = room.sources[0]
    distance = np.linalg.norm(images.images - receiver[[0, 2, 1], None], axis=0)
    return float(distance[images.orders == order].min() / SPEED_OF_SOUND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rays", type=positive_int, default=20000, help="rays of the tracer (default 20000)")
    args = parser.parse_args()
    rate, size = ROOM_DEFAULTS["sample_rate"], ROOM_DEFAULTS["size"]
    plan = shoebox(*size, ROOM_DEFAULTS["walls"], ROOM_DEFAULTS["floor"], ROOM_DEFAULTS["ceiling"])
    source = np.array([1.5, EAR_HEIGHT, 1.2])
    receiver = np.array([size[0] - 1.8, EAR_HEIGHT, size[1] - 1.4])
    centers = band_centers(rate)
    print(f"{size[0]} x {size[1]} x {size[2]} m shoebox, one receiver {np.linalg.norm(source - receiver):.1f} m "
          f"from the source, {args.rays} rays; per band (Hz) {', '.join(f'{c:.0f}' for c in centers)}")  # fmt: skip
    for order in (1, 2, 3):
        field = simulate_source(plan, source, receiver[None], rate, ism_order=order, rays=args.rays, max_seconds=1.0)
        early = np.zeros(len(centers))
        for amplitude in field.band_amplitude[field.images(0)]:
            early += amplitude**2
        tail_now = field.histogram[0].astype(np.float64)  # from order + 1 bounces on
        traced = _ray_trace(plan, None, True, rate, order, args.rays, 1.0, source, receiver[[0, 2, 1]][None])
        tail_before = np.asarray(traced[0][0][0], dtype=np.float64)[:, : tail_now.shape[1]]  # from order on
        # bins wholly before any ray of order + 1 bounces reaches the receiver sphere
        cut = first_arrival(size, source, receiver, order + 1, rate) - RECEIVER_RADIUS / SPEED_OF_SOUND
        bins = int(cut // HIST_BIN_SECONDS)
        print(f"image order {order}: tail before {bins * HIST_BIN_SECONDS * 1000:.0f} ms (only orders <= {order} "
              "arrive), as energy re the image sources' whole energy")  # fmt: skip
        for label, tail in (
            ("  traced from the image order (before)", tail_before),
            ("  from one past it (now)", tail_now),
        ):
            share = tail[:, :bins].sum(axis=1) / early
            total = 10 * np.log10((early + tail.sum(axis=1)) / (early + tail_now.sum(axis=1)))
            print(f"{label:40s}" + "".join(f"{v:7.3f}" for v in share) + "   whole response, dB re now: "
                  + " ".join(f"{v:+.2f}" for v in total))  # fmt: skip


if __name__ == "__main__":
    run_script(main)
