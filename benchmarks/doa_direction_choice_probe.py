"""Can the prompt be tied to a direction after the fact, in these rooms?

A localise-then-select pipeline would find where the sounds come from, split the clip's short-time bins
by direction and keep the direction whose sound matches the prompt. This probe gives such a pipeline its
best case: it is told both true directions, the target's and the distractor's. On the benchmark's clips
(unheard sounds, 0 dB distractor; Replica-like test scenes, or the shoebox test rooms with ``--rooms
shoebox``) each bin goes to the direction whose KEMAR interaural phase at ear level it matches better,
softly: the target's side gets ``sigmoid(kappa * (d_distractor - d_target))`` of the bin, with
``d = 1 - cos(IPD - IPD_template)`` (``--kappas``; 0 in the list means a hard choice). Per assignment it
prints:

- the share of the target's own energy (the target rendered alone) and of the distractor's
  (``mixture - target``) that goes to the target's direction: 50 % means the bins carry no direction;
- the share of clips whose target-side bins have a spectral shape (``classical.spectral_shape``'s
  descriptor) closer to the prompt's than the other side's: the pipeline's choice;
- with ``onset`` weights each bin also counts with the rise of its level (the precedence effect).

The prompt-choice reference (the same descriptor on the perfectly separated sources) is printed beside
it: what the choice would be if the bins did separate by direction.

    python benchmarks/doa_direction_choice_probe.py --scenes-root DATA   # DATA: the baked Replica-like scenes
    python benchmarks/doa_direction_choice_probe.py --rooms shoebox
"""

from __future__ import annotations

import numpy as np
from doa_direct_mask_probe import parse_probe_args, probe_parser

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.cli import non_negative_float, run_script
from asgf_nav.eval.doa_eval import EvalConfig, prompt_choice_reference, test_sets
from asgf_nav.models.doa.classical import hann_stft, level_rise, spectral_shape, spectral_shape_of_power
from asgf_nav.sounds.bank import SoundBank

EPS = 1e-12
NFFT = 512  # the descriptor's frames
HOP = NFFT // 2


def template_phase(sample_rate: int, azimuths: np.ndarray) -> np.ndarray:
    """(B,) azimuths -> (B, F) interaural phase of the nearest KEMAR direction at ear level."""
    hrtf = load_hrtf(sample_rate)
    spectra = hrtf.spectra(NFFT)[hrtf.nearest(azimuths, np.zeros_like(azimuths))]  # (B, 2, F)
    return np.angle(spectra[:, 0] * np.conj(spectra[:, 1]))


def target_side(spec: np.ndarray, ipd_target: np.ndarray, ipd_distractor: np.ndarray, kappa: float) -> np.ndarray:
    """(2, F, T) binaural STFT -> (F, T) share of each bin assigned to the target's direction."""
    ipd = np.angle(spec[0] * np.conj(spec[1]))
    d_target = 1 - np.cos(ipd - ipd_target[:, None])
    d_distractor = 1 - np.cos(ipd - ipd_distractor[:, None])
    if kappa == 0:
        return (d_target < d_distractor).astype(np.float64)
    return 1 / (1 + np.exp(-kappa * (d_distractor - d_target)))


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument(
        "--kappas", type=non_negative_float, nargs="+", default=[0.0, 2.0, 10.0], help="0: a hard choice"
    )
    args = parse_probe_args(parser)

    cfg = EvalConfig(
        rooms=args.rooms, scenes_root=args.scenes_root, pool_dir=args.pool_dir, examples=args.examples, snrs=(0.0,)
    )
    sets, sample_rate = test_sets(cfg, SoundBank.load())
    batch = sets[("unheard", 0.0)]
    mixture, target = batch.mixture.numpy().astype(np.float64), batch.target.numpy().astype(np.float64)
    ipd_t = template_phase(sample_rate, batch.azimuth.numpy().astype(np.float64))
    ipd_d = template_phase(sample_rate, batch.distractor_azimuth.numpy().astype(np.float64))
    prompts = [spectral_shape(p, sample_rate) for p in batch.prompt.numpy().astype(np.float64)]
    los = batch.line_of_sight.numpy()

    print(
        f"{args.rooms}, unheard 0 dB, {len(batch)} clips ({los.mean() * 100:.0f} % in line of sight); "
        f"prompt-choice reference (separated sources): {prompt_choice_reference(batch, sample_rate):.1f} %"
    )
    print("| kappa | weights | target's energy to its side % | distractor's energy to the target's side % | "
          "target chosen % | in line of sight % |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    spectra = [(hann_stft(m, NFFT, HOP), hann_stft(t, NFFT, HOP)) for m, t in zip(mixture, target)]  # once
    for kappa in args.kappas:
        own, other, sides = [], [], []  # the energy shares depend on kappa only, not on the weights
        for i, (spec_m, spec_t) in enumerate(spectra):
            for spec, out in ((spec_t, own), (spec_m - spec_t, other)):  # the STFT is linear
                power = (np.abs(spec) ** 2).sum(axis=0)
                out.append((target_side(spec, ipd_t[i], ipd_d[i], kappa) * power).sum() / (power.sum() + EPS))
            sides.append(target_side(spec_m, ipd_t[i], ipd_d[i], kappa))
        for weights in ("energy", "onset"):
            chosen = []
            for i, ((spec_m, _), side) in enumerate(zip(spectra, sides)):
                power = (np.abs(spec_m) ** 2).sum(axis=0) * (level_rise(spec_m) if weights == "onset" else 1.0)
                near = spectral_shape_of_power(side * power + EPS, sample_rate) @ prompts[i]
                far = spectral_shape_of_power((1 - side) * power + EPS, sample_rate) @ prompts[i]
                chosen.append(near > far)
            chosen_arr = np.array(chosen)
            print(
                f"| {kappa:g} | {weights} | {np.mean(own) * 100:.1f} | {np.mean(other) * 100:.1f} | "
                f"{chosen_arr.mean() * 100:.1f} | {chosen_arr[los].mean() * 100:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    run_script(main)
