"""Row gathers on the hot path: ``t[index]`` against ``t.index_select(0, index)``, side by side in one run.

The batched env gathers each step's RGB-D views and cached spectrograms by row, and PPO gathers each
minibatch's environments. On the CPU, torch's advanced indexing takes a generic kernel that is many times
slower than ``index_select`` for the same rows, so the code uses ``index_select``. This times both on
tensors of the env's shapes (views of a scene with N nodes x 4 yaws, B rows per step) and checks that they
return the same tensor.

    python benchmarks/row_gather.py --batch 64 --image-size 128 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from asgf_nav.cli import positive_int, run_script


def best_ms(gather: Callable[[], torch.Tensor], repeats: int) -> float:
    """The fastest of ``repeats`` timings: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gather()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=positive_int, default=64, help="rows gathered per step (envs)")
    parser.add_argument("--nodes", type=positive_int, default=500, help="navigation nodes of the scene")
    parser.add_argument("--image-size", type=positive_int, default=128, help="RGB-D view side in pixels")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=positive_int, default=50, help="timings per method (the best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    views, side = args.nodes * 4, args.image_size
    tables = {
        "rgb (uint8)": torch.randint(0, 256, (views, side, side, 3), dtype=torch.uint8, generator=generator),
        "depth (float16)": torch.rand(views, side, side, generator=generator).half(),
        "spectrogram cache (float32)": torch.rand(8192, 65, 69, 2, generator=generator),
    }
    print(f"B = {args.batch} rows, {args.threads} thread(s), best of {args.repeats}; ms per gather")
    print(f"{'table':<30} {'t[index]':>10} {'index_select':>13} {'ratio':>7}")
    for name, table in tables.items():
        index = torch.randint(0, len(table), (args.batch,), generator=generator)
        if not torch.equal(table[index], table.index_select(0, index)):
            raise AssertionError(f"{name}: the two gathers differ")
        rows: dict[str, list[float]] = {"advanced": [], "index_select": []}
        for _ in range(3):  # interleaved, so drift on the machine touches both alike
            rows["advanced"].append(best_ms(lambda t=table, i=index: t[i], args.repeats))
            rows["index_select"].append(best_ms(lambda t=table, i=index: t.index_select(0, i), args.repeats))
        advanced, selected = min(rows["advanced"]), min(rows["index_select"])
        print(f"{name:<30} {advanced:>10.3f} {selected:>13.3f} {advanced / selected:>6.1f}x")
    return 0


if __name__ == "__main__":
    run_script(main)
