"""What rendering a baked scene's binaural responses costs: one yaw of a (receiver, source) pair against
all four, which ``SceneRirs.rirs`` renders together (the early paths once, a late tail per yaw).

Random (receiver, source) pairs of one baked scene are rendered both ways in turns after untimed warm-up
pairs (numpy and scipy: run it with OMP_NUM_THREADS=1 for one thread); medians in ms. This is the CPU work
behind one spectrogram-cache miss of the batched env (before its FFT convolution and STFT). It runs in
seconds.

    OMP_NUM_THREADS=1 python benchmarks/rir_render.py --scene-dir DATA/scenes/tiny/tiny_apartment
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from asgf_nav.acoustics.rir import NUM_YAWS, SceneRirs
from asgf_nav.cli import positive_int, run_script
from asgf_nav.scenes.store import SceneStore


def time_pairs(rirs: SceneRirs, pairs: list[tuple[int, int]], warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per pair for one yaw and for all four, measured in turns (warm-up pairs not timed)."""
    yaws = list(range(NUM_YAWS))
    for receiver, source in pairs[:warmup]:
        rirs.rirs([receiver] * NUM_YAWS, [source] * NUM_YAWS, yaws)
    one, four = [], []
    for receiver, source in pairs[warmup:]:
        start = time.perf_counter()
        rirs.rirs([receiver], [source], [0])
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        rirs.rirs([receiver] * NUM_YAWS, [source] * NUM_YAWS, yaws)
        four.append(time.perf_counter() - start)
    return np.array(one), np.array(four)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-dir", type=Path, required=True, help="a baked scene (layout + acoustics)")
    parser.add_argument("--pairs", type=positive_int, default=120, help="timed random (receiver, source) pairs")
    parser.add_argument("--warmup", type=positive_int, default=5, help="untimed pairs first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    store = SceneStore(args.scene_dir)
    rirs = SceneRirs(store)
    sources = rirs.source_nodes
    nodes = len(store.array("positions"))
    rng = np.random.default_rng(args.seed)
    pairs = [(int(rng.integers(nodes)), int(rng.choice(sources))) for _ in range(args.warmup + args.pairs)]
    one, four = time_pairs(rirs, pairs, args.warmup)
    print(
        f"{args.scene_dir.name}: {rirs.sample_rate} Hz, {args.pairs} pairs in turns: "
        f"1 yaw {np.median(one) * 1e3:.2f} ms, 4 yaws {np.median(four) * 1e3:.2f} ms "
        f"({np.median(four) / np.median(one):.2f}x the time for 4x the responses)"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
