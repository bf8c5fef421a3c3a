"""The selective head's posterior sharpened by the onset-weighted HRTF templates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from doa_helpers import SR, tiny_head_checkpoint

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.models.doa.checkpoint import save_checkpoint
from asgf_nav.models.doa.classical import HrtfTemplateDoa
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
from asgf_nav.models.doa.features import AzimuthGrid, circular_distance
from asgf_nav.models.doa.fusion import TemplateSharpening, template_scores

GRID = AzimuthGrid()


def _bursts(rng: np.random.Generator, n: int, first: int, period: int = 1600, length: int = 640) -> np.ndarray:
    """Noise bursts (by default 40 ms every 100 ms) from sample ``first`` on: one onset each."""
    source = np.zeros(n)
    for start in range(first, n - 2000, period):
        source[start : start + length] = rng.standard_normal(length)
    return source


def _through_kemar(source: np.ndarray, azimuth: float) -> np.ndarray:
    """(2, N) ``source`` heard from ``azimuth`` on the horizontal plane, the direct path only."""
    hrtf = load_hrtf(SR)
    hrir = hrtf.hrir[hrtf.nearest(np.array([azimuth]), np.array([0.0]))[0]].astype(np.float64)
    return np.stack([np.convolve(source, hrir[c])[: len(source)] for c in range(2)])


def _posterior_around(azimuth: float, spread: float) -> np.ndarray:
    """(1, K) a broad head posterior peaked at ``azimuth``."""
    p = np.exp(-circular_distance(GRID.centers, azimuth) / spread)
    return (p / p.sum())[None]


def test_template_scores_peak_at_the_source_and_lie_in_unit_range() -> None:
    template = HrtfTemplateDoa.precedence(SR)
    rng = np.random.default_rng(3)
    for azimuth in (35.0, 160.0, 250.0):
        ears = _through_kemar(_bursts(rng, SR // 2, 400), azimuth)
        scores = template.scores(ears)
        assert scores.shape == (72,) and np.all(np.abs(scores) <= 1.0)
        assert template(ears) == template.azimuths[np.argmax(scores)]  # the method's answer is their peak
        assert circular_distance(template(ears), azimuth) <= 5
        assert scores.max() > 0.5  # one clean direct path: the phases agree with its template


def test_sharpening_moves_a_broad_head_posterior_onto_the_templates_peak_near_it() -> None:
    """The head chose the target but 15 degrees off; the templates follow the distractor, whose onsets
    are four times as many and louder; their product answers the target within 5 degrees, which neither
    answers alone."""
    rng = np.random.default_rng(5)
    target, distractor = 40.0, 220.0
    ears = _through_kemar(_bursts(rng, SR // 2, 400), target)
    ears += 2.0 * _through_kemar(_bursts(rng, SR // 2, 1200, period=400, length=320), distractor)
    template = HrtfTemplateDoa.precedence(SR)
    scores = template_scores(template, ears[None], GRID)
    posterior = _posterior_around(target + 15.0, spread=20.0)
    alone = GRID.centers[scores.argmax(axis=1)][0]
    assert circular_distance(alone, distractor) <= 5  # the templates alone follow the louder source
    assert circular_distance(GRID.decode(posterior)[0], target) > 10  # the head alone is imprecise
    fused = TemplateSharpening(smooth_bins=1, template_weight=5.0).fuse(posterior, scores)
    assert circular_distance(GRID.decode(fused)[0], target) <= 5
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


def test_weight_zero_is_the_head_and_a_large_weight_is_the_templates() -> None:
    rng = np.random.default_rng(1)
    posterior = rng.dirichlet(np.ones(72), size=6)
    scores = rng.uniform(-1, 1, size=(6, 72))
    head = TemplateSharpening(smooth_bins=0, template_weight=0.0).fuse(posterior, scores)
    np.testing.assert_allclose(head, posterior, rtol=1e-4)  # up to the 1e-9 floor under the logarithm
    templates = TemplateSharpening(smooth_bins=2, template_weight=1e4).fuse(posterior, scores)
    assert (templates.argmax(axis=1) == scores.argmax(axis=1)).all()


def test_smoothing_spreads_the_posterior_over_its_neighbours() -> None:
    """A head one bin off the templates' peak: spread over one bin on each side, the peak is reached."""
    posterior = np.full((1, 72), 1e-6)
    posterior[0, 10] = 1.0
    scores = np.zeros((1, 72))
    scores[0, 11] = 0.5
    scores[0, 40] = 1.0  # far from the head: must not win
    unsmoothed = TemplateSharpening(smooth_bins=0, template_weight=5.0).fuse(posterior, scores)
    smoothed = TemplateSharpening(smooth_bins=1, template_weight=5.0).fuse(posterior, scores)
    assert unsmoothed.argmax() == 10 and smoothed.argmax() == 11


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"smooth_bins": -1}, "smooth_bins"),
        ({"smooth_bins": 1.5}, "smooth_bins"),
        ({"smooth_bins": True}, "smooth_bins"),
        ({"template_weight": -0.1}, "template_weight"),
        ({"template_weight": float("nan")}, "template_weight"),
        ({"template_weight": float("inf")}, "template_weight"),
    ],
)
def test_bad_settings_are_refused_by_name(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TemplateSharpening(**fields)


def test_mismatched_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="same bins"):
        TemplateSharpening().fuse(np.ones((2, 72)) / 72, np.zeros((2, 36)))
    with pytest.raises(ValueError, match="wider than the head's 4 bins"):
        TemplateSharpening(smooth_bins=2).fuse(np.ones((1, 4)) / 4, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="azimuth_step=10"):
        template_scores(HrtfTemplateDoa.precedence(SR), np.zeros((1, 2, 4000)), AzimuthGrid(bin_width=10.0))


def test_the_benchmark_has_a_sharpened_row_that_reads_the_heads_posterior_and_the_templates(
    tmp_path: Path, monkeypatch
) -> None:
    """A posterior peaked on the truth at weight 0 makes the rows perfect; a flat one at a large weight
    makes them the templates' row, which is what ``HrtfTemplateDoa.precedence`` answers clip by clip."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.rooms import shoebox_pool

    pool = shoebox_pool(3, 4, seed=2, progress=False)
    monkeypatch.setattr(doa_eval, "test_pool", lambda cfg: pool)
    ckpt = tiny_head_checkpoint(tmp_path / "selective.pt")
    crnn = tmp_path / "crnn.pt"
    save_checkpoint(crnn, "crnn", SeldCrnn(CrnnConfig(channels=8, rnn_size=8)), None, 0, DoaTrainConfig(), {})
    base = dict(
        selective=str(ckpt), crnn=str(crnn), pool_dir=str(tmp_path), snrs=(0.0,), gmm_train_examples=40,
        train_poses=3, examples=8, out=str(tmp_path / "eval.json"), threads=1, clip_seconds=0.25,
    )  # fmt: skip
    peaked = lambda model, b: GRID.encode(b.azimuth.numpy()).numpy() ** 8  # noqa: E731
    flat = lambda model, b: np.full((len(b), GRID.num_bins), 1.0 / GRID.num_bins)  # noqa: E731
    rows = {}
    for name, posteriors, weight in (("peaked", peaked, 0.0), ("flat", flat, 1e4)):
        monkeypatch.setattr(doa_eval, "posteriors", posteriors)
        cfg = doa_eval.EvalConfig(**base, sharpen_weight=weight)
        rows[name] = {method: per["unheard +0 dB"] for method, per in doa_eval.evaluate(cfg)["methods"].items()}
    sharpened, onset = "selective (audio prompt) x onset templates", "HRTF templates, onset-weighted (precedence)"
    assert rows["peaked"][sharpened]["acc5"] == 100.0
    assert rows["peaked"]["CRNN (audio only) x onset templates"]["acc5"] == 100.0  # every head gets the row
    sets, sr = doa_eval.test_sets(cfg, doa_eval.SoundBank.load(), pool)
    batch = sets[("unheard", 0.0)]
    per_clip = [HrtfTemplateDoa.precedence(sr)(clip) for clip in batch.mixture.numpy().astype(np.float64)]
    expected = doa_eval.angular_metrics(np.array(per_clip), batch.azimuth.numpy())
    for method in (onset, sharpened, "CRNN (audio only) x onset templates"):
        assert {k: rows["flat"][method][k] for k in expected} == pytest.approx(expected)
