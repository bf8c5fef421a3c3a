"""What the DoA benchmark (``scripts/eval_doa.py``) is configured with, free of torch so that the script answers
``--help`` and refuses a bad command line at once; the benchmark itself is ``doa_eval.py``."""

from __future__ import annotations

from dataclasses import dataclass

from asgf_nav.models.doa.config import DISTRACTOR_WINDOWS, ROOM_KINDS, SHARPEN_SMOOTH_BINS, SHARPEN_WEIGHT


def condition_label(split: str, snr: float) -> str:
    """``unheard -5 dB``, ``unheard +0.5 dB``: the name of a condition in the results, one per SNR asked for."""
    return f"{split} {snr + 0.0:+g} dB"  # + 0.0: -0 dB is 0 dB


@dataclass
class EvalConfig:
    selective: str = "data/doa/selective.pt"  # checkpoint of the selective head; none: leave it out
    crnn: str = "data/doa/crnn.pt"  # checkpoint of the audio-only CRNN; none: leave it out
    pool_dir: str = "data/doa/pools"  # cache of the rendered RIR pools (built on the first run)
    rooms: str = "shoebox"  # test rooms: shoebox | scenes | both (baked test scenes) | shoebox_pair
    scenes_root: str = ""  # data root of the baked scenes, for rooms = scenes | both
    scenes_dataset: str = "replica"  # which baked scene set's test scenes
    test_poses: int = 120  # listener poses of the test pool
    examples: int = 400  # per (SNR, split) condition
    snrs: tuple[float, ...] = (0.0, -5.0, -10.0)  # target-to-distractor ratios (dB) of the unheard conditions
    gmm_train_examples: int = 3000  # training clips of the GMM regression
    train_poses: int = 600  # listener poses of the training pool the GMM regression is fitted on (as pretrain_doa.py's)
    distractor_window: str = "drawn"  # drawn (the benchmark's clips) | loudest (no steadiness cue)
    clip_seconds: float = 0.5  # at most 1 s (the bank's sounds); the heads were trained on 0.5 s clips
    sharpen_smooth_bins: int = SHARPEN_SMOOTH_BINS  # sharpened rows: the head's posterior spread
    sharpen_weight: float = SHARPEN_WEIGHT  # sharpened rows: weight of the template scores
    out: str = "data/doa/eval.json"  # where the JSON of every metric is written
    threads: int = 2  # torch threads


EVAL_CHOICES: dict[str, tuple[str, ...]] = {"rooms": ROOM_KINDS, "distractor_window": DISTRACTOR_WINDOWS}
NO_CHECKPOINT = ("", "none")  # --selective / --crnn values that leave the head out
