"""DoA head training throughput: example rendering and full training steps, per device, side by side.

Rows, all measured in one run on the same RIR pool and batch size, one call of each in turns per repeat
(so a busy machine slows every row alike and the ratios hold where absolute speeds drift):
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
from asgf_nav.models.doa.build import build_model
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.rooms import shoebox_pool
from asgf_nav.models.doa.train import optimization_step
from asgf_nav.sounds.bank import SoundBank

Work = tuple[str, torch.device, Callable[[], object]]  # (row name, device, one call)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_in_turns(works: list[Work], repeats: int) -> list[float]:
    """Seconds per call of each work: two untimed calls each, then ``repeats`` rounds of one timed call of
    every work in turn."""
    for _, device, fn in works:
        for _ in range(2):
            fn()
        _sync(device)
    seconds = [0.0] * len(works)
    for _ in range(repeats):
        for i, (_, device, fn) in enumerate(works):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            seconds[i] += time.perf_counter() - start
    return [total / repeats for total in seconds]


def _train_step(model: torch.nn.Module, sampler: DoaExampleSampler, cfg: DoaTrainConfig, rng) -> Callable[[], None]:
    """The training loop's step: render a batch, then :func:`optimization_step`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return lambda: optimization_step(model, optimizer, sampler.sample(cfg.batch_size, (-5.0, 5.0), rng), cfg)


def device_works(device: torch.device, args: argparse.Namespace, bank: SoundBank, pool) -> list[Work]:
    """The rows' work on one device: rendering in float64 and float32, and each model's training step."""
    categories = bank.categories()
    rng = np.random.default_rng(0)
    works: list[Work] = []
    for dtype in (torch.float64, torch.float32):
        sampler = DoaExampleSampler(bank, pool, "train", categories=categories, device=device, dtype=dtype)
        render = lambda s=sampler: s.sample(args.batch_size, (-5.0, 5.0), rng)  # noqa: E731
        works.append((f"render {str(dtype).removeprefix('torch.')}", device, render))
    sampler = DoaExampleSampler(bank, pool, "train", categories=categories, device=device)  # the device's default
    for kind in args.models:
        cfg = DoaTrainConfig(model=kind, batch_size=args.batch_size)
        model = build_model(kind, cfg, categories).to(device)
        works.append((f"step {kind}", device, _train_step(model, sampler, cfg, rng)))
    return works


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--models", nargs="+", choices=["selective", "crnn"], default=["selective", "crnn"])
    parser.add_argument("--batch-size", type=positive_int, default=24)
    parser.add_argument("--repeats", type=positive_int, default=10)
    parser.add_argument("--poses", type=positive_int, default=24, help="shoebox poses in the RIR pool")
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    if len(set(args.models)) < len(args.models):
        parser.error(f"--models: {args.models} names a model more than once")
    torch.set_num_threads(args.threads)
    devices = devices_to_compare(args.devices)
    bank, pool = SoundBank.load(), shoebox_pool(args.poses, 6, seed=11, progress=False)
    works = [work for device in devices for work in device_works(device, args, bank, pool)]
    seconds = timed_in_turns(works, args.repeats)
    measured = {(str(device), name): t for (name, device, _), t in zip(works, seconds)}  # cuda:0 and cuda:1 apart
    print(f"batch {args.batch_size}, {args.threads} CPU thread(s), {args.repeats} timed calls per row, in turns")
    print("| device | work | ms per batch | examples/s | x cpu | x float64 render |\n|---|---|---|---|---|---|")
    for (dev, name), t in measured.items():
        cpu = measured.get(("cpu", name))
        ratio = f"{cpu / t:.1f}x" if cpu is not None else "-"
        float64 = measured[(dev, "render float64")] / t if name == "render float32" else None
        versus = f"{float64:.2f}x" if float64 is not None else "-"
        print(f"| {dev} | {name} | {t * 1e3:.1f} | {args.batch_size / t:,.0f} | {ratio} | {versus} |")


if __name__ == "__main__":
    run_script(main)
