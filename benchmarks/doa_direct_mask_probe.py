"""How well could the target be localised if one knew which time-frequency bins its direct sound rules?

Each of the benchmark's clips (unheard sounds, 0 dB distractor; Replica-like test scenes, or the
shoebox test rooms with ``--rooms shoebox``) is split, by linearity, into the target's direct sound (the
sound through the straight path alone: the same HRIR, delay and level, rendered again without
reflections or tail) and everything else (the target's reflections and the distractor). Interaural
template matching against the exact KEMAR HRTF (elevations within 20 degrees, as
``HrtfTemplateDoa``) then reads the observed clip through several weightings of its short-time bins:

- ``uniform``: every bin by its interaural cross-spectrum magnitude (what a time average sees);
- ``onset``: by the rise of its level (the precedence effect, as ``HrtfTemplateDoa.precedence``);
- ``oracle mask``: only the bins where the target's direct sound holds more energy than the rest, an
  ideal binary mask that no listener has (``+10 dB``: ten times more). It is not a bound: a weighting
  that follows where sound events first arrive can do better (docs/doa-benchmark.md);
- ``direct only``: the target's direct sound alone, nothing else in the clip (the reader's own limit).

Two readers: ``phase`` matches interaural phase only (as ``HrtfTemplateDoa``); ``transfer`` matches the
complex interaural transfer, level and phase together (the cross-relation ``|Y_L G_R - Y_R G_L|``
against every HRIR pair, normalised per bin). Each is run on the mixture and on the clean target.
``--learned-clips N`` adds a learned reader: a small MLP fitted on N clips of the training rooms on the
same pooled cues, with onset weights or the ideal mask (see ``learned_inputs``).

    python benchmarks/doa_direct_mask_probe.py --scenes-root DATA   # DATA: the baked Replica-like scenes
    python benchmarks/doa_direct_mask_probe.py --rooms shoebox --learned-clips 6000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier
from tqdm import tqdm

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.cli import int_at_least, non_negative_int, positive_int, run_script
from asgf_nav.eval.doa_eval import EvalConfig, condition_seed
from asgf_nav.models.doa.classical import hann_stft, level_rise
from asgf_nav.models.doa.config import TEST_POOL_SEED, DoaTrainConfig, train_pool_seed
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler, loudest_window
from asgf_nav.models.doa.pools import rir_pool
from asgf_nav.models.doa.rooms import RirPool
from asgf_nav.models.doa.train import angular_metrics
from asgf_nav.sounds.bank import SoundBank

EPS = 1e-12
BIN_WIDTH = 5.0  # degrees per class of the learned reader


def pools(cfg: DoaTrainConfig, split: str, num_poses: int, seed: int) -> tuple[RirPool, RirPool]:
    """The RIR pool of ``split`` (as the benchmark and training draw it) and the same poses and sources
    again, each response only its straight path (``rir_pool(direct_only=True)``, cached beside it)."""
    pool = rir_pool(cfg, split, num_poses, seed)
    direct = rir_pool(cfg, split, num_poses, seed, direct_only=True)
    if not (np.allclose(direct.azimuth, pool.azimuth) and (direct.line_of_sight == pool.line_of_sight).all()):
        raise RuntimeError(f"the direct-path pool does not repeat the {split} pool's poses")
    return pool, direct


def clip_parts(
    sampler: DoaExampleSampler, direct: DoaExampleSampler, examples: int, snr_db: float, seed: int | list[int]
):
    """The benchmark's clips of one condition, and the target's direct sound in each, on the same scale.

    Replays the sampler's draws (they come first, in a fixed order) and renders the target once through
    the direct-only responses, windowed as the full target was."""
    batch = sampler.sample(examples, snr_db, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    draws = [sampler._draw(snr_db, rng) for _ in range(examples)]
    names = [d.target for d in draws]
    poses = np.array([d.pose for d in draws])
    sources = np.array([d.target_source for d in draws])
    full, lengths = sampler._received(names, poses, sources)
    part, _ = direct._received(names, poses, sources)
    starts = loudest_window(full, lengths, sampler.clip, sampler.clip // 8)
    index = starts[:, None] + torch.arange(sampler.clip)[None, :]
    seg_full = full.gather(2, index[:, None, :].expand(-1, 2, -1)).numpy()
    seg_direct = part.gather(2, index[:, None, :].expand(-1, 2, -1)).numpy()
    target = batch.target.numpy().astype(np.float64)
    scale = np.sqrt((target**2).sum(axis=(1, 2)) / ((seg_full**2).sum(axis=(1, 2)) + EPS))[:, None, None]
    if not np.allclose(seg_full * scale, target, atol=1e-4 * np.abs(target).max()):
        raise RuntimeError("the replayed draws do not reproduce the benchmark's target clips")
    return batch, seg_direct * scale


class InterauralReader:
    """Template matching of weighted short-time interaural cues against every KEMAR direction."""

    def __init__(self, sample_rate: int, nfft: int, hop: int, azimuth_step: float = 5.0) -> None:
        hrtf = load_hrtf(sample_rate)
        self.nfft, self.hop = nfft, hop
        self.azimuths = np.arange(0.0, 360.0, azimuth_step)
        elevations = (-20.0, -10.0, 0.0, 10.0, 20.0)
        idx = np.stack([hrtf.nearest(self.azimuths, np.full_like(self.azimuths, e)) for e in elevations])
        freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
        self.band = (freqs >= 100.0) & (freqs <= 7500.0)
        g = np.fft.rfft(hrtf.hrir[idx].astype(np.float64), n=nfft, axis=-1)[..., self.band]  # (E, A, 2, F)
        self.g_left, self.g_right = g[:, :, 0], g[:, :, 1]
        self.template_phase = np.exp(-1j * np.angle(self.g_left * np.conj(self.g_right)))

    def spec(self, audio: np.ndarray) -> np.ndarray:
        return hann_stft(audio, self.nfft, self.hop)[:, self.band]  # (2, F, T)

    def phase(self, spec: np.ndarray, weight: np.ndarray) -> float:
        """Azimuth whose interaural phase best matches the weighted unit cross-spectrum."""
        cross = spec[0] * np.conj(spec[1])
        pooled = (weight * cross / (np.abs(cross) + EPS)).sum(axis=1)  # (F,)
        score = (pooled * self.template_phase).real.sum(axis=-1)  # (E, A)
        return float(self.azimuths[np.unravel_index(np.argmax(score), score.shape)[1]])

    def transfer(self, spec: np.ndarray, weight: np.ndarray) -> float:
        """Azimuth whose HRIR pair best satisfies Y_L G_R = Y_R G_L in the weighted bins (level and phase)."""
        yl, yr = spec[0][None, None], spec[1][None, None]  # (1, 1, F, T)
        gl, gr = self.g_left[..., None], self.g_right[..., None]  # (E, A, F, 1)
        a, b = yl * gr, yr * gl
        residual = np.abs(a - b) ** 2 / (np.abs(a) ** 2 + np.abs(b) ** 2 + EPS)  # 0 = match, 2 = opposite
        score = -(weight[None, None] * residual).sum(axis=(2, 3))
        return float(self.azimuths[np.unravel_index(np.argmax(score), score.shape)[1]])


def weightings(reader: InterauralReader, observed: np.ndarray, direct: np.ndarray) -> dict[str, tuple]:
    """(spectrum read, bin weights) per weighting of one (2, N) clip whose target's direct sound is ``direct``."""
    spec = reader.spec(observed)
    d_spec = reader.spec(direct)
    d_power = (np.abs(d_spec) ** 2).sum(axis=0)
    rest_power = (np.abs(spec - d_spec) ** 2).sum(axis=0)
    magnitude = np.abs(spec[0] * np.conj(spec[1]))
    return {
        "uniform": (spec, magnitude),
        "onset": (spec, level_rise(spec)),
        "oracle mask": (spec, magnitude * (d_power > rest_power)),
        "oracle mask +10 dB": (spec, magnitude * (d_power > 10 * rest_power)),
        "direct only": (d_spec, np.abs(d_spec[0] * np.conj(d_spec[1]))),
    }


def pooled_cues(spec: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per frequency bin the ``weight``-pooled unit interaural phase (cos, sin) and level difference / 10 dB,
    and the log of the total weight: the input of the learned reader."""
    cross = spec[0] * np.conj(spec[1])
    ild = np.clip(20 * np.log10((np.abs(spec[0]) + 1e-9) / (np.abs(spec[1]) + 1e-9)), -30, 30) / 10
    total = weight.sum(axis=1) + EPS
    phase = (weight * cross / (np.abs(cross) + EPS)).sum(axis=1) / total
    return np.concatenate([phase.real, phase.imag, (weight * ild).sum(axis=1) / total, [np.log(total.sum())]])


MIN_LEARNED_CLIPS = 200  # a tenth held out to stop the fit early must still hold clips of many of the 72 classes
LEARNED_INPUTS = ("onset", "oracle mask", "oracle mask, empty bins from onset", "mask pattern alone")


def learned_inputs(reader: InterauralReader, observed: np.ndarray, direct: np.ndarray) -> dict[str, np.ndarray]:
    """The learned reader's inputs for one clip. Where the ideal mask leaves a bin empty its pooled cues
    are zero, which tells the reader where the direct sound is weak, a hint about the direction that the
    cues themselves do not give: ``empty bins from onset`` fills those bins with the onset-pooled cues,
    and ``mask pattern alone`` (the share of each bin's frames the mask keeps) measures the hint."""
    parts = weightings(reader, observed, direct)
    spec, mask = parts["oracle mask"]
    onset = pooled_cues(*parts["onset"])
    masked = pooled_cues(spec, mask)
    kept = mask > 0
    empty = np.concatenate([np.tile(~kept.any(axis=1), 3), [False]])  # the bins' phase, phase, level entries
    return {
        "onset": onset,
        "oracle mask": masked,
        "oracle mask, empty bins from onset": np.where(empty, onset, masked),
        "mask pattern alone": np.concatenate([kept.mean(axis=1), [np.log(kept.sum() + 1)]]),
    }


def learned_reader_table(
    args, cfg: DoaTrainConfig, reader: InterauralReader, test: tuple, bank: SoundBank, common: dict
) -> None:
    """A small MLP (72 classes of 5 degrees, as ``doa_feature_probe.py``) per input, fitted on
    ``args.learned_clips`` clips of the training rooms and sounds at 0 dB with the target in line of sight
    (a hidden target's label cannot be heard), tested on the benchmark's clips."""
    pool, direct = pools(cfg, "train", args.train_poses, train_pool_seed(cfg.seed))
    samplers = [DoaExampleSampler(bank, p, "train", targets="line_of_sight", **common) for p in (pool, direct)]
    chunks = [  # rendered 500 clips at a time: a few GB of float64 signals at once otherwise
        clip_parts(*samplers, min(500, args.learned_clips - start), 0.0, seed=1 + start)
        for start in range(0, args.learned_clips, 500)
    ]
    train = DoaBatch.concat([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
    labels = np.round(train[0].azimuth.numpy() / BIN_WIDTH).astype(int) % int(360 / BIN_WIDTH)
    truth, los = test[0].azimuth.numpy(), test[0].line_of_sight.numpy()
    print(f"\nlearned reader, fitted on {args.learned_clips} clips with the target in line of sight")
    print("| signal | input | ACC(5) % | MAE deg | line of sight: ACC(5) % | MAE deg |")
    print("|---|---|---|---|---|---|")
    for signal in ("mixture", "target"):
        start = time.monotonic()
        inputs = {}
        for name, (batch, target_direct) in (("train", train), ("test", test)):
            clips = getattr(batch, signal).numpy().astype(np.float64)
            bar = tqdm(zip(clips, target_direct), total=len(clips), desc=f"{signal}, {name} clips", mininterval=5)
            rows = [learned_inputs(reader, c, d) for c, d in bar]
            inputs[name] = {k: np.stack([r[k] for r in rows]) for k in LEARNED_INPUTS}
        for kind in LEARNED_INPUTS:
            x_train, x_test = inputs["train"][kind], inputs["test"][kind]
            mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
            clf = MLPClassifier((256,), alpha=1e-3, max_iter=200, early_stopping=True, random_state=0)
            clf.fit((x_train - mean) / std, labels)
            pred = clf.classes_[np.argmax(clf.predict_proba((x_test - mean) / std), axis=1)] * BIN_WIDTH
            every, seen = angular_metrics(pred, truth), angular_metrics(pred[los], truth[los])
            print(
                f"| {signal} | {kind} | {every['acc5']:.1f} | {every['mae']:.1f} | {seen['acc5']:.1f} | "
                f"{seen['mae']:.1f} |",
                flush=True,
            )
        print(f"# {signal}: {time.monotonic() - start:.0f} s")


def probe_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of the DoA probes that read the benchmark's clips: which test rooms, where their data is."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", choices=("scenes", "shoebox"), default="scenes", help="the test rooms")
    parser.add_argument("--scenes-root", default="", help="data root with the baked Replica-like scenes")
    parser.add_argument(
        "--pool-dir",
        default="data/doa/pools",
        help="where the rendered RIR pools are cached: read if there, rendered and written there if not "
        "(default: %(default)s, relative to the working directory)",
    )
    parser.add_argument("--examples", type=positive_int, default=400, help="the benchmark's first clips")
    parser.add_argument("--threads", type=positive_int, default=1)
    return parser


def parse_probe_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if args.rooms == "scenes" and not args.scenes_root:
        parser.error("--rooms scenes needs --scenes-root (the baked Replica-like scenes)")
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--nfft", type=int_at_least(256, "the HRIRs are 181 taps at 16 kHz"), default=256)
    parser.add_argument("--hop", type=positive_int, default=64)
    parser.add_argument("--learned-clips", type=non_negative_int, default=0, help="learned reader clips (0: none)")
    parser.add_argument("--train-poses", type=positive_int, default=1200, help="the learned reader's training pool")
    args = parse_probe_args(parser)
    if args.hop > args.nfft:
        parser.error(f"--hop: {args.hop} samples is longer than a frame (--nfft {args.nfft}): samples would be skipped")
    if 0 < args.learned_clips < MIN_LEARNED_CLIPS:
        parser.error(f"--learned-clips: {args.learned_clips}; the reader needs {MIN_LEARNED_CLIPS} or more (0: none)")

    bank = SoundBank.load()
    cfg = DoaTrainConfig(rooms=args.rooms, scenes_root=args.scenes_root, pool_dir=args.pool_dir)
    pool, direct_pool = pools(cfg, "test", EvalConfig.test_poses, TEST_POOL_SEED)  # the benchmark's test pool
    common = dict(categories=bank.categories(), distractor_window="drawn")
    sampler = DoaExampleSampler(bank, pool, "test", **common)
    direct = DoaExampleSampler(bank, direct_pool, "test", **common)
    batch, target_direct = clip_parts(sampler, direct, args.examples, 0.0, condition_seed("unheard", 0.0))
    truth, los = batch.azimuth.numpy(), batch.line_of_sight.numpy()
    reader = InterauralReader(pool.sample_rate, args.nfft, args.hop)

    print(
        f"{args.rooms}, unheard 0 dB, {args.examples} clips ({los.mean() * 100:.0f} % in line of sight); "
        f"frames of {args.nfft} samples every {args.hop}"
    )
    print("| signal | weighting | reader | ACC(5) % | MAE deg | line of sight: ACC(5) % | MAE deg | masked bins % |")
    print("|---|---|---|---|---|---|---|---|")
    for signal in ("mixture", "target"):
        start = time.monotonic()
        clips = getattr(batch, signal).numpy().astype(np.float64)
        estimates: dict[tuple[str, str], list[float]] = {}
        kept: dict[str, list[float]] = {}
        for observed, d in tqdm(zip(clips, target_direct), total=len(clips), desc=signal, mininterval=5):
            parts = weightings(reader, observed, d)
            if signal != "mixture":  # the direct sound is the same whichever signal is read: one row of it
                del parts["direct only"]
            for name, (_, weight) in parts.items():
                kept.setdefault(name, []).append(float((weight > 0).mean()))
            for name, (spec, weight) in parts.items():
                for how in ("phase", "transfer"):
                    estimates.setdefault((name, how), []).append(getattr(reader, how)(spec, weight))
        for (name, how), est in estimates.items():
            every, seen = angular_metrics(np.array(est), truth), angular_metrics(np.array(est)[los], truth[los])
            share = f"{np.mean(kept[name]) * 100:.1f}" if name.startswith("oracle") else ""
            read = "-" if name == "direct only" else signal  # the direct sound alone, no signal read
            print(
                f"| {read} | {name} | {how} | {every['acc5']:.1f} | {every['mae']:.1f} | "
                f"{seen['acc5']:.1f} | {seen['mae']:.1f} | {share} |"
            )
        print(f"# {signal}: {time.monotonic() - start:.0f} s")
    if args.learned_clips:
        learned_reader_table(args, cfg, reader, (batch, target_direct), bank, common)


if __name__ == "__main__":
    run_script(main)
