"""Direction-of-arrival benchmark: the selective head against audio-only and classical methods on the
same clips (unseen rooms; unheard test sounds and heard training sounds; target plus a distractor of
another category at 0, -5 and -10 dB). With a head receiver each learned head also gets a row with its
posterior sharpened by the onset-weighted templates (:mod:`asgf_nav.models.doa.fusion`).

Metrics, per method, SNR and sound split: MAE (degrees, circular), ACC within 5 degrees (AV-SSAN's
metrics), ACC within 20 degrees, and the MAE after folding truth and estimate onto the front hemisphere
(``mae_lateral``), which shows how much of a two-microphone method's error is front/back confusion, and
the share of estimates within 20 (5) degrees of the distractor (``hit_distractor20``, ``hit_distractor5``),
which shows selectivity, and within 5 degrees of either source (``either5``), which shows localisation
whatever the selection.
The same metrics are also given over the clips whose target is in line of sight (``line_of_sight``): in
the embedded scenes a source behind a wall is heard through doorways, so its direct-path azimuth, the
label, cannot be heard.

Two references frame the table: ``direct_sound_reference`` (HRTF templates and whole HRIR waveforms
matched to the direct sound alone: localisation) and ``prompt_choice_reference`` (the prompt's spectral
shape against the separated target and distractor: selection).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asgf_nav.devices import torch_threads
from asgf_nav.eval.doa_config import NO_CHECKPOINT, EvalConfig, condition_label
from asgf_nav.io import atomic_write_text, code_version, file_identity
from asgf_nav.logging_utils import shell_command
from asgf_nav.models.doa.checkpoint import DoaCheckpointError, load_model
from asgf_nav.models.doa.classical import (
    ArrayDoa,
    GmmRegression,
    HrirWaveformMatch,
    HrtfTemplateDoa,
    gcc_phat,
    interaural_summary,
    spectral_shape,
)
from asgf_nav.models.doa.config import MIN_CLIP_SECONDS, TEST_POOL_SEED, DoaTrainConfig, train_pool_seed
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.features import AzimuthGrid, circular_distance, lateral_fold
from asgf_nav.models.doa.fusion import TemplateSharpening, template_scores
from asgf_nav.models.doa.observation import DEFAULT_WEIGHTS as PACKAGED_WEIGHTS
from asgf_nav.models.doa.pools import pool_source, renderer_version, rir_pool, source_renderer_version
from asgf_nav.models.doa.rooms import RirPool
from asgf_nav.models.doa.train import angular_metrics, posteriors, predict
from asgf_nav.sounds.bank import SoundBank

logger = logging.getLogger(__name__)

TEST_SET_SEED = 11
# the published tables' conditions, with the seeds their clips were drawn with
_DEFAULT_CONDITIONS = (("unheard", 0.0), ("unheard", -5.0), ("unheard", -10.0), ("heard", 0.0))


def condition_seed(split: str, snr: float) -> int | list[int]:
    """Seed of one condition's clips, the same whatever other conditions a run asks for (``--snrs``):
    the default conditions keep the seeds of the published tables, any other SNR gets its own."""
    if (split, float(snr)) in _DEFAULT_CONDITIONS:
        return TEST_SET_SEED + _DEFAULT_CONDITIONS.index((split, float(snr)))
    return [TEST_SET_SEED, ("unheard", "heard").index(split), int(round(float(snr) * 100)) + 10**6]


def _receiver(rooms: str | None) -> str:
    return "pair" if rooms == "shoebox_pair" else "kemar"


def _rooms_config(cfg: EvalConfig) -> DoaTrainConfig:
    return DoaTrainConfig(
        pool_dir=cfg.pool_dir, rooms=cfg.rooms, scenes_root=cfg.scenes_root, scenes_dataset=cfg.scenes_dataset
    )


def test_pool(cfg: EvalConfig) -> RirPool:
    return rir_pool(_rooms_config(cfg), "test", cfg.test_poses, TEST_POOL_SEED)


def tested_pool_sources(cfg: EvalConfig) -> dict[str, dict]:
    """Per kind of test room, what its test pool is rendered from (``pools.pool_source``) and by which renderer:
    ``{"scenes": {"source": "scenes:...", "render_version": 4}}``, ``{"shoebox": {"source": "shoebox:2",
    "shoebox_pool_version": 2}}``."""
    rooms_cfg = _rooms_config(cfg)
    kinds = ["shoebox", "scenes"] if cfg.rooms == "both" else [cfg.rooms]
    described = {}
    for rooms in kinds:
        name, version = renderer_version(rooms)
        described[rooms] = {"source": pool_source(rooms_cfg, rooms, "test"), name.lower(): version}
    return described


def head_training_pools(cfg: EvalConfig, path: str, model: torch.nn.Module, tested: dict[str, dict]) -> dict[str, dict]:
    """What ``model`` (read from ``path``) recorded of its training pools, per kind of room, with the renderer
    version where it can be told (recorded, or ``pools.source_renderer_version``; None where not). Warns for each
    kind of room it shares with the test pools (``tested``, :func:`tested_pool_sources`) whose renderer version
    differs: the training and test pools hold other rooms or scenes by design, but should be rendered alike."""
    described = {}
    recorded = getattr(model, "trained_pool_sources", {})
    if not recorded:
        logger.warning(
            "%s records no training pools (it was written before heads recorded them): whether it learned from "
            "responses rendered as the test pools are cannot be told", path
        )  # fmt: skip
    for rooms, source in recorded.items():
        name, _ = renderer_version(rooms)
        version = getattr(model, "trained_pool_versions", {}).get(rooms)
        if version is None:
            version = source_renderer_version(_rooms_config(cfg), rooms, "train", source)
        described[rooms] = {"source": source, name.lower(): version}
        now = tested.get(rooms, {}).get(name.lower())
        if version is not None and now is not None and version != now:
            logger.warning(
                "%s was trained on %s pools rendered at %s %d, but the test pools are rendered at %s %d: it is "
                "measured on responses rendered otherwise than those it learned; train it again, or fine-tune it "
                "with scripts/pretrain_doa.py --init-from %s",
                path, rooms, name, version, name, now, shell_command(path),
            )  # fmt: skip
    return described


def test_sets(
    cfg: EvalConfig, bank: SoundBank, pool: RirPool | None = None
) -> tuple[dict[tuple[str, float], DoaBatch], int]:
    """The fixed evaluation clips (unheard test sounds at every SNR, heard training sounds at 0 dB) and
    their sample rate; ``pool`` is the test pool when the caller already has it."""
    if not MIN_CLIP_SECONDS <= cfg.clip_seconds <= 1.0:  # SoundBank.waveform gives one second of every sound
        raise ValueError(
            f"clip_seconds={cfg.clip_seconds}: must be in [{MIN_CLIP_SECONDS}, 1], a few of the heads' frames at "
            "least and the length of the bank's sounds at most"
        )
    pool = pool if pool is not None else test_pool(cfg)
    categories = bank.categories()
    sets: dict[tuple[str, float], DoaBatch] = {}
    samplers = {  # one per split: each SNR's clips come from its own seeded stream, not the sampler's state
        split: DoaExampleSampler(
            bank,
            pool,
            sound_split,
            clip_seconds=cfg.clip_seconds,
            categories=categories,
            distractor_window=cfg.distractor_window,
        )
        for split, sound_split in (("unheard", "test"), ("heard", "train"))
    }
    conditions = [("unheard", snr) for snr in cfg.snrs] + [("heard", 0.0)]
    for split, snr in conditions:
        rng = np.random.default_rng(condition_seed(split, snr))
        sets[(split, snr)] = samplers[split].sample(cfg.examples, snr, rng)
    return sets, pool.sample_rate


def _per_clip(fn: Callable[[np.ndarray], float], batch: DoaBatch, desc: str) -> np.ndarray:
    audio = batch.mixture.numpy().astype(np.float64)
    return np.array([fn(a) for a in tqdm(audio, desc=desc, mininterval=5, leave=False)])


class _OnsetTemplateScores:
    """Onset-weighted template scores per test batch and azimuth grid, computed once: the templates' own
    row (which runs first, and whose ``seconds`` include building the templates) and each head's sharpened
    row read the same ones, so a sharpened row's ``seconds`` count the head alone, unless the head's grid is
    not the templates' 5 degrees: then its row also scores that grid."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._templates: dict[float, HrtfTemplateDoa] = {}
        self._scores: dict[tuple[int, float], np.ndarray] = {}

    def __call__(self, batch: DoaBatch, grid: AzimuthGrid) -> np.ndarray:
        key = (id(batch), grid.bin_width)  # the test batches live as long as the benchmark
        if key not in self._scores:
            if grid.bin_width not in self._templates:
                self._templates[grid.bin_width] = HrtfTemplateDoa.precedence(self.sample_rate, grid.bin_width)
            template = self._templates[grid.bin_width]
            self._scores[key] = template_scores(template, batch.mixture.numpy(), grid, "onset-weighted templates")
        return self._scores[key]

    def azimuths(self, batch: DoaBatch) -> np.ndarray:
        """The onset-weighted templates' own estimates, in steps of 5 degrees."""
        grid = AzimuthGrid()
        return grid.centers[self(batch, grid).argmax(axis=1)]


def fit_gmm(bank: SoundBank, cfg: EvalConfig) -> GmmRegression:
    """GMM regression trained on mixtures of training sounds in training rooms (-5..5 dB)."""
    train_cfg = _rooms_config(cfg)
    pool = rir_pool(train_cfg, "train", cfg.train_poses, train_pool_seed(train_cfg.seed))
    sampler = DoaExampleSampler(bank, pool, "train", categories=bank.categories())
    batch = sampler.sample(cfg.gmm_train_examples, (-5.0, 5.0), np.random.default_rng(99))
    return GmmRegression().fit(_summaries(batch), batch.azimuth.numpy())


def _summaries(batch: DoaBatch) -> np.ndarray:
    return np.stack([interaural_summary(a) for a in batch.mixture.numpy().astype(np.float64)])


def direct_sound_reference(pool: RirPool, template: HrtfTemplateDoa) -> dict:
    """HRTF template matching on the direct-sound window of every line-of-sight response alone (no
    sound, no distractor, nothing later; :meth:`RirPool.direct_sound`): how well the direct sound,
    with whatever arrives within those milliseconds, tells the azimuth in these rooms. A reference
    point, not a bound: a method may use later parts of a response.

    ``waveform`` and ``waveform_2ms`` match the whole binaural waveform instead (time and level
    differences and spectral shape, :class:`HrirWaveformMatch`), on the same window and on the 2 ms from
    1 ms before the onset to 1 ms after it."""
    los = pool.line_of_sight if pool.line_of_sight is not None else np.ones(pool.azimuth.shape, bool)
    truth = pool.azimuth[los]
    windows = pool.direct_sound()[los]  # (N, W, 2)
    frame = np.zeros((2, template.nfft))
    offset = (template.nfft - windows.shape[1]) // 2  # centred in one analysis frame
    pred = []
    for w in windows:
        frame[:, offset : offset + w.shape[0]] = w.T
        pred.append(template(frame))
    metrics = angular_metrics(np.array(pred), truth)
    metrics["responses"] = int(los.sum())
    match = HrirWaveformMatch(pool.sample_rate)
    for key, direct_ms in (("waveform", 2.5), ("waveform_2ms", 1.0)):
        short = pool.direct_sound(direct_ms=direct_ms)[los]
        metrics[key] = angular_metrics(np.array([match(w.T) for w in short]), truth)
    return metrics


def prompt_choice_reference(batch: DoaBatch, sample_rate: int) -> float:
    """% of clips whose target, as received, has a spectral shape closer to the prompt's than the
    distractor's (``mixture - target``) has: how often matching the prompt against perfectly separated
    sources would choose the right one. A reference point for selection, not a bound: a learned
    similarity may do better (or worse, on sounds it never heard)."""
    mixture, target = batch.mixture.numpy().astype(np.float64), batch.target.numpy().astype(np.float64)
    prompt = batch.prompt.numpy().astype(np.float64)
    chosen = []
    for m, t, p in zip(mixture, target, prompt):
        reference = spectral_shape(p, sample_rate)
        chosen.append(spectral_shape(t, sample_rate) @ reference > spectral_shape(m - t, sample_rate) @ reference)
    return float(np.mean(chosen) * 100)


def evaluate(cfg: EvalConfig) -> dict:
    """Run every method on every condition; returns {method: {condition: metrics}} plus timings. torch's
    thread count is ``cfg.threads`` while it runs, the caller's after it."""
    with torch_threads(cfg.threads):
        return _evaluate(cfg)


def _evaluate(cfg: EvalConfig) -> dict:
    code = code_version()  # as it starts: the checkout may change while it runs
    sharpening = TemplateSharpening(cfg.sharpen_smooth_bins, cfg.sharpen_weight)  # bad settings stop at once
    bank = SoundBank.load()
    methods: dict[str, Callable[[DoaBatch], np.ndarray]] = {}  # the heads first: a bad checkpoint stops at once
    heads: list[tuple[str, torch.nn.Module]] = []  # (row name, model): each also gets a row sharpened by templates
    tested = tested_pool_sources(cfg)  # cheap: the pools are rendered after the heads are read
    trained_on: dict[str, dict] = {}
    for name, kind, path in (("selective", "selective", cfg.selective), ("CRNN (audio only)", "crnn", cfg.crnn)):
        if path.lower() in NO_CHECKPOINT:
            continue
        if Path(path).is_file():
            model = load_model(path, kind=kind)  # a row is labelled by its slot: the wrong kind is refused
            try:
                sharpening.check_bins(model.cfg.grid.num_bins)
            except ValueError as err:  # the option and this head disagree: the user's to fix, in one line
                raise DoaCheckpointError(
                    f"--sharpen-smooth-bins {cfg.sharpen_smooth_bins} does not fit {path}: {err} (at most "
                    f"{(model.cfg.grid.num_bins - 1) // 2})"
                ) from None
            if _receiver(model.trained_on_rooms) != _receiver(cfg.rooms):
                logger.warning(
                    "%s was trained on rooms=%s but is tested on rooms=%s: a head trained at one receiver "
                    "(KEMAR head or free-field pair) does not transfer to the other",
                    path,
                    model.trained_on_rooms,
                    cfg.rooms,
                )
            trained_on[kind] = head_training_pools(cfg, path, model, tested)
            if name == "selective":
                name = f"selective ({model.cfg.prompt} prompt)"
            heads.append((name, model))
            methods[name] = lambda b, m=model: predict(m, b)
        elif kind == "selective":
            logger.warning(
                "no checkpoint %s: the selective head is left out of the table (the packaged head: --selective %s)",
                path,
                PACKAGED_WEIGHTS,
            )
        else:
            logger.warning("no checkpoint %s: %s is left out of the table", path, name)
    pool = test_pool(cfg)
    sets, sr = test_sets(cfg, bank, pool)
    methods["GCC-PHAT"] = lambda b: _per_clip(lambda a: gcc_phat(a, sr), b, "GCC-PHAT")
    srp, music = ArrayDoa("SRP", sr), ArrayDoa("MUSIC", sr)
    methods["SRP-PHAT (pyroomacoustics)"] = lambda b: _per_clip(srp, b, "SRP-PHAT")
    methods["MUSIC (pyroomacoustics)"] = lambda b: _per_clip(music, b, "MUSIC")
    template = None
    if cfg.rooms != "shoebox_pair":  # the microphone pair has no head to match templates of
        template = HrtfTemplateDoa(sr)
        methods["HRTF template matching (KEMAR)"] = lambda b: _per_clip(template, b, "HRTF templates")
        onset = _OnsetTemplateScores(sr)
        methods["HRTF templates, onset-weighted (precedence)"] = onset.azimuths
        for name, model in heads:  # the audio-only CRNN too: how much of the gain is the templates' alone
            methods[f"{name} x onset templates"] = lambda b, m=model: m.cfg.grid.decode(
                sharpening.fuse(posteriors(m, b), onset(b, m.cfg.grid))
            )
    gmm = fit_gmm(bank, cfg)
    methods["GMM regression (ILD/IPD)"] = lambda b: gmm.predict(_summaries(b))
    drr = pool.direct_to_reverberant_db()[pool.line_of_sight]
    results: dict = {
        "methods": {},
        # what re-runs it: every setting, and the heads' files by content (a path may hold other weights later)
        "config": dataclasses.asdict(cfg),
        "heads": {
            name: file_identity(path)
            for name, path in (("selective", cfg.selective), ("crnn", cfg.crnn))
            if path.lower() not in NO_CHECKPOINT and Path(path).is_file()
        },
        # what the test pools and each head's training pools were rendered from, and by which renderer
        "test_pools": tested,
        "head_training_pools": trained_on,
        "command": "python " + shlex.join(sys.argv),
        "code": code,
        "examples": cfg.examples,
        "rooms": cfg.rooms,
        "distractor_window": cfg.distractor_window,
        "clip_seconds": cfg.clip_seconds,
        "test_rooms_drr_db": {
            "median": float(np.median(drr)),
            "q10": float(np.percentile(drr, 10)),
            "q90": float(np.percentile(drr, 90)),
        },
    }
    logger.info("test rooms, line-of-sight pairs: direct-to-reverberant ratio %s", results["test_rooms_drr_db"])
    if template is not None:
        results["direct_sound_reference"] = direct_sound_reference(pool, template)
        logger.info("HRTF templates on the direct sound alone: %s", results["direct_sound_reference"])
    results["prompt_choice_reference"] = {
        condition_label(split, snr): prompt_choice_reference(batch, sr) for (split, snr), batch in sets.items()
    }
    logger.info("prompt's spectral shape against the separated sources: %s", results["prompt_choice_reference"])
    results["per_clip_error"] = {}  # degrees, per method and condition: for paired comparisons of methods
    for name, fn in methods.items():
        results["methods"][name], results["per_clip_error"][name] = {}, {}
        for (split, snr), batch in sets.items():
            start = time.monotonic()
            pred = fn(batch)
            truth = batch.azimuth.numpy()
            m = angular_metrics(pred, truth)
            results["per_clip_error"][name][condition_label(split, snr)] = circular_distance(pred, truth).tolist()
            m["mae_lateral"] = float(circular_distance(lateral_fold(pred), lateral_fold(truth)).mean())
            to_distractor = circular_distance(pred, batch.distractor_azimuth.numpy().astype(np.float64))
            m["hit_distractor20"] = float((to_distractor <= 20).mean() * 100)
            m["hit_distractor5"] = float((to_distractor <= 5).mean() * 100)
            # localisation whatever the selection: within 5 degrees of either source
            m["either5"] = float(((to_distractor <= 5) | (circular_distance(pred, truth) <= 5)).mean() * 100)
            los = batch.line_of_sight.numpy()
            m["line_of_sight_share"] = float(los.mean() * 100)
            if los.any():  # the same clips where the direct path is audible (not behind a wall)
                m["line_of_sight"] = angular_metrics(pred[los], truth[los])
            m["seconds"] = time.monotonic() - start
            results["methods"][name][condition_label(split, snr)] = m
            logger.info("%s | %s | %s", name, condition_label(split, snr), m)
    atomic_write_text(cfg.out, json.dumps(results, indent=1))
    return results


def paired_acc5_lead(results: dict, condition: str) -> tuple[str, dict[str, tuple[float, float]]]:
    """The method with the highest ACC(5) in ``condition`` and, for every other method, its lead in
    points with one standard error, paired over the same clips: whether a lead of a few points over
    400 clips is more than chance."""
    errors = {name: np.asarray(per[condition]) for name, per in results["per_clip_error"].items()}
    best = max(errors, key=lambda name: (errors[name] <= 5).mean())
    lead = {}
    if len(errors[best]) < 2:  # no standard error from one clip
        return best, lead
    for name, err in errors.items():
        if name != best:
            diff = ((errors[best] <= 5).astype(float) - (err <= 5)) * 100
            lead[name] = (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))))
    return best, lead


def _table(methods: dict, conditions: list[str], header: list[str], cell) -> list[str]:
    lines = ["| method | " + " | ".join(header) + " |", "|---" * (len(conditions) + 1) + "|"]
    for name, per in methods.items():
        lines.append(f"| {name} | " + " | ".join(cell(per[c]) for c in conditions) + " |")
    return lines


def _cell(m: dict) -> str:
    text = f"{m['mae']:.1f} / {m['acc5']:.1f} / {m['acc20']:.1f} ({m['mae_lateral']:.1f})"
    if "either5" in m:
        text += f" [{m['hit_distractor5']:.1f} / {m['either5']:.1f}]"
    return text


def markdown_table(results: dict) -> str:
    """Rows = methods, columns = conditions, cells = MAE / ACC5 / ACC20 (lateral MAE) [ACC5 to the
    distractor / to either source]; then the same metrics over the line-of-sight clips when some clips
    are not in sight; then the best method's paired ACC5 lead in the first condition; then the
    references where there are some."""
    methods = results["methods"]
    conditions = list(next(iter(methods.values())))
    first = next(iter(methods.values()))
    lines = _table(
        methods,
        conditions,
        [
            f"{c}: MAE / ACC5 / ACC20 (lateral MAE)"
            + (" [ACC5 to the distractor / to either]" if "either5" in first[c] else "")
            for c in conditions
        ],
        _cell,
    )
    in_sight = [first[c].get("line_of_sight_share", 100.0) for c in conditions]
    if all("line_of_sight" in first[c] for c in conditions) and min(in_sight) < 100:  # some clips are not
        shares = ", ".join(f"{c}: {first[c]['line_of_sight_share']:.0f} %" for c in conditions)
        lines += ["", f"Line-of-sight clips only ({shares} of the clips): MAE / ACC5 / ACC20", ""]
        lines += _table(
            methods,
            conditions,
            conditions,
            lambda m: "{mae:.1f} / {acc5:.1f} / {acc20:.1f}".format(**m["line_of_sight"]),
        )
    best, lead = paired_acc5_lead(results, conditions[0]) if len(results.get("per_clip_error", {})) > 1 else ("", {})
    if lead:
        leads = ", ".join(f"{name} {d:+.1f} ± {se:.1f}" for name, (d, se) in lead.items())
        lines += ["", f"ACC5 lead of {best} at {conditions[0]}, paired over the same clips (± one SE): {leads}"]
    if "prompt_choice_reference" in results:
        shares = ", ".join(f"{c}: {v:.1f} %" for c, v in results["prompt_choice_reference"].items())
        lines += ["", f"Prompt's spectral shape closer to the separated target's than to the distractor's: {shares}"]
    if "direct_sound_reference" in results:
        ref = results["direct_sound_reference"]
        lines += [
            "",
            f"HRTF templates on the direct sound alone ({ref['responses']} line-of-sight test responses, "
            f"no sound, no distractor): {ref['mae']:.1f} / {ref['acc5']:.1f} / {ref['acc20']:.1f}",
        ]
        for key, what in (("waveform", "the same windows"), ("waveform_2ms", "their first 2 ms")):
            if key in ref:
                m = ref[key]
                lines.append(
                    f"Whole HRIR waveforms matched to {what}: {m['mae']:.1f} / {m['acc5']:.1f} / {m['acc20']:.1f}"
                )
    return "\n".join(lines)
