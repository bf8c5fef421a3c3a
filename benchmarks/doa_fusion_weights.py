"""Choose the settings of the selective head's posterior sharpened by the onset-weighted templates.

The product ``smooth(posterior) * exp(template_weight * score)`` (:mod:`asgf_nav.models.doa.fusion`) has
two settings: how many bins the head's posterior is spread over on each side, and how much a unit of
template score weighs. This script renders clips from the *validation* scenes and sounds at 0 dB (the
training recipe's validation pool, never the benchmark's test scenes or sounds), computes the head's
posteriors and the templates' scores once, and prints ACC within 5 degrees for every pair on a grid,
best first, with the head alone (weight 0) and the templates alone for reference. The packaged defaults
of ``TemplateSharpening`` are this script's choice for the packaged head.

    python benchmarks/doa_fusion_weights.py --scenes-root DATA   # DATA: the baked Replica-like scenes
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from asgf_nav.cli import positive_int, run_script
from asgf_nav.logging_utils import setup_logging
from asgf_nav.models.doa.checkpoint import load_model
from asgf_nav.models.doa.classical import HrtfTemplateDoa
from asgf_nav.models.doa.config import VAL_POOL_SEED, DoaTrainConfig
from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.fusion import TemplateSharpening, template_scores
from asgf_nav.models.doa.observation import DEFAULT_WEIGHTS
from asgf_nav.models.doa.pools import rir_pool
from asgf_nav.models.doa.train import angular_metrics, posteriors
from asgf_nav.sounds.bank import SoundBank

SMOOTH_BINS = (0, 1, 2, 4, 6)
WEIGHTS = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes-root", required=True, help="data root with the baked Replica-like scenes")
    parser.add_argument("--head", default=str(DEFAULT_WEIGHTS), help="checkpoint of the head (selective or CRNN)")
    parser.add_argument(
        "--pool-dir",
        default="data/doa/pools",
        help="where the rendered RIR pools are cached: read if there, rendered and written there if not "
        "(default: %(default)s, relative to the working directory)",
    )
    parser.add_argument("--examples", type=positive_int, default=600, help="validation clips at 0 dB")
    parser.add_argument("--poses", type=positive_int, default=60, help="validation poses (training's default)")
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    setup_logging("INFO")
    torch.set_num_threads(args.threads)

    model = load_model(args.head)
    if model.trained_on_rooms == "shoebox_pair":  # tuned against KEMAR templates, its choice would mean nothing
        parser.error(f"--head: {args.head} was trained on the free-field pair (shoebox_pair), not a KEMAR head")
    bank = SoundBank.load()
    cfg = DoaTrainConfig(rooms="scenes", scenes_root=args.scenes_root, pool_dir=args.pool_dir)
    pool = rir_pool(cfg, "val", args.poses, VAL_POOL_SEED)
    sampler = DoaExampleSampler(bank, pool, "val", categories=bank.categories())
    clips = sampler.sample(args.examples, 0.0, np.random.default_rng(7))
    start = time.monotonic()
    grid = model.cfg.grid
    posterior = posteriors(model, clips)
    template = HrtfTemplateDoa.precedence(pool.sample_rate, azimuth_step=grid.bin_width)
    scores = template_scores(template, clips.mixture.numpy(), grid, "onset-weighted templates")
    truth = clips.azimuth.numpy()
    print(f"{args.examples} validation clips at 0 dB; head and templates read in {time.monotonic() - start:.1f} s\n")

    rows = []
    for smooth_bins, weight in itertools.product(SMOOTH_BINS, WEIGHTS):
        fused = TemplateSharpening(smooth_bins, weight).fuse(posterior, scores)
        rows.append((smooth_bins, weight, angular_metrics(grid.decode(fused), truth)))
    rows.sort(key=lambda row: (-row[2]["acc5"], row[2]["mae"]))
    print("| smooth_bins | template_weight | MAE deg | ACC(5) % | ACC(20) % |")
    print("|---|---|---|---|---|")
    for smooth_bins, weight, m in rows:
        print(f"| {smooth_bins} | {weight:g} | {m['mae']:.1f} | {m['acc5']:.1f} | {m['acc20']:.1f} |")
    head = angular_metrics(grid.decode(posterior), truth)
    alone = angular_metrics(grid.centers[scores.argmax(axis=1)], truth)
    print(f"\nhead alone: {head['mae']:.1f} / {head['acc5']:.1f} / {head['acc20']:.1f}")
    print(f"templates alone: {alone['mae']:.1f} / {alone['acc5']:.1f} / {alone['acc20']:.1f}")
    print(f"chosen: smooth_bins={rows[0][0]}, template_weight={rows[0][1]:g}")


if __name__ == "__main__":
    run_script(main)
