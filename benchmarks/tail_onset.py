"""How much of a baked scene's responses the late tail's onset at the direct sound removes.

The late tail is noise shaped by the ray-traced energy envelope, interpolated between 4 ms bin centres,
so the bin that holds the direct sound used to spread its energy up to a bin and a half ahead of it.
Responses now start the tail at the straight-line travel time (``SceneRirs.direct_sample``). This renders
random (receiver, source, yaw) triples of one baked scene both ways and prints the energy that arrived
before the direct sound and the share of each response's energy the onset removes: the first says what a
direction-of-arrival estimate heard ahead of the direct sound, the second how much a whole-second
spectrogram changes. It runs in seconds per scene.

    python benchmarks/tail_onset.py --scene-dir DATA/scenes/replica/frl_apartment_5 --pairs 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from asgf_nav.acoustics.binaural import noise_offsets, render_late
from asgf_nav.acoustics.rir import SceneRirs
from asgf_nav.cli import run_script
from asgf_nav.models.doa.rooms import has_direct_path
from asgf_nav.scenes.store import SceneStore


def measure(scene_dir: Path, pairs: int, seed: int) -> dict[str, np.ndarray]:
    """Per sampled triple: energy before the direct sound relative to the direct sound's first 2.5 ms
    (dB, old rendering; line-of-sight triples only, NaN for the others) and the share of the whole
    response the onset removes."""
    store = SceneStore(scene_dir)
    rirs, positions = SceneRirs(store), np.asarray(store.array("positions"), dtype=np.float64)
    rng = np.random.default_rng(seed)
    lead_db, removed = [], []
    while len(removed) < pairs:
        source = int(rng.choice(rirs.source_nodes))
        receiver, yaw = int(rng.integers(rirs.num_receivers)), int(rng.integers(4))
        if receiver == source:
            continue
        new = rirs.rir(receiver, source, yaw).astype(np.float64)
        energy = rirs.late_energy(receiver, source)
        offsets = noise_offsets(receiver, source, yaw, rirs._noise_span())
        first = rirs.direct_sample(receiver, source)
        args = (energy, rirs.hist_bin_seconds, rirs.sample_rate, rirs.length, offsets)
        old = new + render_late(*args, 0, rirs.diffuse) - render_late(*args, first, rirs.diffuse)  # as rendered now
        direct = (new[first : first + int(0.0025 * rirs.sample_rate)] ** 2).sum()
        seen = has_direct_path(rirs, positions, receiver, source)
        lead_db.append(10 * np.log10((old[:first] ** 2).sum() / direct + 1e-30) if seen else np.nan)
        removed.append(((old - new) ** 2).sum() / (old**2).sum())
    return {"lead_db": np.array(lead_db), "removed": np.array(removed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-dir", type=Path, required=True, help="a baked scene (layout + acoustics)")
    parser.add_argument("--pairs", type=int, default=200, help="random (receiver, source, yaw) triples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs: {args.pairs} must be at least 1")
    found = measure(args.scene_dir, args.pairs, args.seed)
    seen = found["lead_db"][~np.isnan(found["lead_db"])]
    lead = seen[seen > -200]
    share = 100 * found["removed"]
    print(f"{args.scene_dir.name}: {args.pairs} triples, {len(seen)} in line of sight")
    print(
        f"  line of sight, energy before the direct sound in {len(lead)}; relative to the direct sound's first "
        f"2.5 ms: median {np.median(lead):.1f} dB, max {lead.max():.1f} dB"
        if len(lead)
        else "  none before it"
    )
    print(
        f"  share of the response removed: median {np.median(share):.3f} %, 90th percentile "
        f"{np.percentile(share, 90):.3f} %, max {share.max():.3f} %"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
