"""Do onset-weighted interaural features localise better than time-averaged ones?

The same small MLP classifier (72 azimuth classes of 5 degrees, scikit-learn) is trained on clips from
the baked training scenes (training sounds) and tested on the DoA benchmark's unheard 0 dB clips in the
test scenes (``--rooms shoebox``: the shoebox rooms instead), once on the clean target signals and once
on the mixtures with the distractor. Features, per STFT bin of 256-point frames every 64 samples
(125-7400 Hz), are the interaural phase (cos, sin) and level difference pooled over the clip either by
the bin's cross-spectrum magnitude (``avg``, what a time-averaged method sees) or by the rise of its
level over the previous frame (``onset``, the precedence effect, as ``HrtfTemplateDoa.precedence``);
``both`` concatenates the two. A probe, not a model to use: it says whether the heads' 24 ms hop hides a
cue that a finer, onset-weighted reading would give them, and whether that cue survives a distractor.

    python benchmarks/doa_feature_probe.py --scenes-root DATA   # DATA: the baked Replica-like scenes
    python benchmarks/doa_feature_probe.py --rooms shoebox
"""

from __future__ import annotations

import time

import numpy as np
from doa_direct_mask_probe import parse_probe_args, probe_parser
from sklearn.neural_network import MLPClassifier
from tqdm import tqdm

from asgf_nav.cli import positive_int, run_script
from asgf_nav.eval.doa_eval import EvalConfig, test_sets
from asgf_nav.models.doa.classical import hann_stft, level_rise
from asgf_nav.models.doa.config import DoaTrainConfig, train_pool_seed
from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.features import circular_distance
from asgf_nav.models.doa.pools import rir_pool
from asgf_nav.sounds.bank import SoundBank

EPS = 1e-12
BIN_WIDTH = 5.0


def pooled_features(audio: np.ndarray, nfft: int = 256, hop: int = 64) -> dict[str, np.ndarray]:
    """(2, N) clip -> {"avg", "onset"}: per bin the pooled unit interaural phase (cos, sin) and ILD / 10 dB."""
    spec = hann_stft(audio, nfft, hop)[:, 2:120]  # about 125-7400 Hz at 16 kHz
    cross = spec[0] * np.conj(spec[1])
    unit = cross / (np.abs(cross) + EPS)
    ild = np.clip(20 * np.log10((np.abs(spec[0]) + 1e-9) / (np.abs(spec[1]) + 1e-9)), -30, 30) / 10
    onset = level_rise(spec)

    def pool(weight: np.ndarray) -> np.ndarray:
        total = weight.sum(axis=1) + EPS
        phase = (weight * unit).sum(axis=1) / total
        return np.concatenate([phase.real, phase.imag, (weight * ild).sum(axis=1) / total])

    return {"avg": pool(np.abs(cross)), "onset": pool(onset)}


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--train-examples", type=positive_int, default=6000)
    parser.add_argument("--train-poses", type=positive_int, default=1200)
    args = parse_probe_args(parser)

    bank = SoundBank.load()
    cfg = DoaTrainConfig(rooms=args.rooms, scenes_root=args.scenes_root, pool_dir=args.pool_dir)
    pool = rir_pool(cfg, "train", args.train_poses, train_pool_seed(cfg.seed))  # the GMM baseline's training pool
    sampler = DoaExampleSampler(bank, pool, "train", categories=bank.categories())
    train = sampler.sample(args.train_examples, 0.0, np.random.default_rng(1))
    eval_cfg = EvalConfig(
        rooms=args.rooms, scenes_root=args.scenes_root, pool_dir=args.pool_dir, snrs=(0.0,), examples=args.examples
    )
    test = test_sets(eval_cfg, bank)[0][("unheard", 0.0)]
    labels = np.round(train.azimuth.numpy() / BIN_WIDTH).astype(int) % int(360 / BIN_WIDTH)
    truth, los = test.azimuth.numpy(), test.line_of_sight.numpy()

    print(f"{args.rooms}, unheard 0 dB, {len(truth)} clips ({los.mean() * 100:.0f} % in line of sight)")
    print("| signal | features | ACC(5) % | MAE deg | line of sight: ACC(5) % | MAE deg |")
    print("|---|---|---|---|---|---|")
    seconds = {}
    for signal in ("target", "mixture"):
        start = time.monotonic()
        train_feats, test_feats = (
            [
                pooled_features(a)
                for a in tqdm(
                    getattr(batch, signal).numpy().astype(np.float64), desc=f"{signal}, {name}", mininterval=5
                )
            ]
            for batch, name in ((train, "train clips"), (test, "test clips"))
        )
        for kind in ("avg", "onset", "both"):
            keys = ("avg", "onset") if kind == "both" else (kind,)
            x_train = np.stack([np.concatenate([f[k] for k in keys]) for f in train_feats])
            x_test = np.stack([np.concatenate([f[k] for k in keys]) for f in test_feats])
            mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
            clf = MLPClassifier((256,), alpha=1e-3, max_iter=200, early_stopping=True, random_state=0)
            clf.fit((x_train - mean) / std, labels)
            pred = clf.classes_[np.argmax(clf.predict_proba((x_test - mean) / std), axis=1)] * BIN_WIDTH
            err = circular_distance(pred, truth)
            print(
                f"| {signal} | {kind} | {np.mean(err <= 5) * 100:.1f} | {err.mean():.1f} | "
                f"{np.mean(err[los] <= 5) * 100:.1f} | {err[los].mean():.1f} |",
                flush=True,
            )
        seconds[signal] = time.monotonic() - start
    print("\nfeatures and fits: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))


if __name__ == "__main__":
    run_script(main)
