"""DoA head training throughput: example rendering and full training steps, per device, side by side.

Rows, all measured in one run on the same RIR pool and batch size:
  render float64   the sampler's default on a CPU (the benchmark's clips)
  render float32   the default on a GPU
  step <model>     one training step as scripts/pretrain_doa.py takes it (render + forward + backward +
                   clipping + AdamW), the model on that device

    python benchmarks/doa_train_throughput.py                      # shoebox rooms, cpu (and cuda if present)
    python benchmarks/doa_train_throughput.py --devices cuda --batch-size 32 --repeats 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from asgf_nav.cli import positive_int, run_script
from asgf_nav.devices import devices_to_compare
from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.rooms import shoebox_pool
from asgf_nav.models.doa.train import DoaTrainConfig, build_model, optimization_step
from asgf_nav.sounds.bank import SoundBank


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds per call after two untimed calls."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def _train_step(model: torch.nn.Module, sampler: DoaExampleSampler, cfg: DoaTrainConfig, rng) -> Callable[[], None]:
    """The training loop's step: render a batch, then :func:`optimization_step`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return lambda: optimization_step(model, optimizer, sampler.sample(cfg.batch_size, (-5.0, 5.0), rng), cfg)


def device_rows(device: torch.device, args: argparse.Namespace, bank: SoundBank, pool) -> list[tuple[str, float]]:
    """(work, seconds per batch) on one device."""
    categories = bank.categories()
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (torch.float64, torch.float32):
        sampler = DoaExampleSampler(bank, pool, "train", categories=categories, device=device, dtype=dtype)
        seconds = _timed(lambda s=sampler: s.sample(args.batch_size, (-5.0, 5.0), rng), args.repeats, device)
        rows.append((f"render {str(dtype).removeprefix('torch.')}", seconds))
    sampler = DoaExampleSampler(bank, pool, "train", categories=categories, device=device)  # the device's default
    for kind in args.models:
        cfg = DoaTrainConfig(model=kind, batch_size=args.batch_size)
        model = build_model(kind, cfg, categories).to(device)
        rows.append((f"step {kind}", _timed(_train_step(model, sampler, cfg, rng), args.repeats, device)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--models", nargs="+", choices=["selective", "crnn"], default=["selective", "crnn"])
    parser.add_argument("--batch-size", type=positive_int, default=24)
    parser.add_argument("--repeats", type=positive_int, default=10)
    parser.add_argument("--poses", type=positive_int, default=24, help="shoebox poses in the RIR pool")
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = devices_to_compare(args.devices)
    bank, pool = SoundBank.load(), shoebox_pool(args.poses, 6, seed=11, progress=False)
    rows = {device.type: device_rows(device, args, bank, pool) for device in devices}
    baseline = dict(rows.get("cpu", []))
    print(f"batch {args.batch_size}, {args.threads} CPU thread(s), {args.repeats} timed calls per row")
    print("| device | work | ms per batch | examples/s | x cpu |\n|---|---|---|---|---|")
    for dev, measured in rows.items():
        for name, seconds in measured:
            ratio = f"{baseline[name] / seconds:.1f}x" if name in baseline else "-"
            print(f"| {dev} | {name} | {seconds * 1e3:.1f} | {args.batch_size / seconds:,.0f} | {ratio} |")


if __name__ == "__main__":
    run_script(main)
