"""Training of DoA heads (the selective network and the audio-only CRNN): the loop, its loss and steps,
and the validation metrics.

Examples are generated on the fly from an RIR pool and the sound bank's training sounds, so every step
sees new mixtures. The settings and models are in ``config.py``; the atomic, resumable checkpoints the
loop writes and the checks a resume passes in ``checkpoint.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asgf_nav.devices import preserved_torch_rng, resolve_device, torch_threads
from asgf_nav.io import exclusive_lock
from asgf_nav.logging_utils import bar_pacing
from asgf_nav.models.doa.build import build_model, model_prompt
from asgf_nav.models.doa.checkpoint import (
    DoaCheckpointError,
    check_resumable,
    check_same_pool_sources,
    out_lock,
    read_checkpoint,
    remove_stale_out_temporaries,
    restore_rng,
    save_checkpoint,
    start_from_weights,
)
from asgf_nav.models.doa.config import (
    MASK_TARGETS,
    POSTERIOR_LOSSES,
    VAL_POOL_SEED,
    DoaTrainConfig,
    learning_rate,
    train_pool_seed,
    unused_settings,
)
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.features import binaural_stft, circular_distance, compressed_magnitude
from asgf_nav.models.doa.network import doa_loss, posterior_loss
from asgf_nav.models.doa.pools import check_rooms, pool_source, renderer_version, rir_pool, source_change
from asgf_nav.sounds.bank import SoundBank
from asgf_nav.sounds.families import MAX_INSTANCES, GeneratedBank
from asgf_nav.termination import raise_if_stopped, stop_between_updates, stop_requested

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- steps
def training_loss(model: torch.nn.Module, batch: DoaBatch, doa_weight: float, posterior_kind: str = "mse"):
    out = model(batch.mixture, model_prompt(model, batch))
    target_post = model.cfg.grid.encode(batch.azimuth)
    if "masked" in out:
        target_mag = compressed_magnitude(binaural_stft(batch.target, model.cfg.stft))
        return doa_loss(out, target_mag, target_post, doa_weight, posterior_kind)
    loss, parts = posterior_loss(out, target_post, posterior_kind)
    return loss * doa_weight, parts


def optimization_step(model: torch.nn.Module, optimizer, batch: DoaBatch, cfg: DoaTrainConfig):
    """One gradient step on ``batch`` (gradient norm clipped at 5); returns the loss and its parts."""
    loss, parts = training_loss(model, batch, cfg.doa_weight, cfg.posterior_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss, parts


@torch.no_grad()
def posteriors(model: torch.nn.Module, batch: DoaBatch, chunk: int = 64) -> np.ndarray:
    """(B, K) posteriors for a batch, evaluated in chunks on the model's device in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(batch), chunk):
        part = batch.slice(i, i + chunk).to(device)
        out.append(model(part.mixture, model_prompt(model, part))["posterior"].cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def predict(model: torch.nn.Module, batch: DoaBatch, chunk: int = 64) -> np.ndarray:
    """Decoded azimuths (B,) for a batch."""
    return model.cfg.grid.decode(posteriors(model, batch, chunk))


def snr_lift(cfg: DoaTrainConfig, step: int) -> float:
    """dB added to the training SNR range early on (off by default: with the template mask head a clean
    start taught the mask to stay open)."""
    if cfg.curriculum_steps <= 0:
        return 0.0
    return cfg.curriculum_db * max(0.0, 1.0 - step / cfg.curriculum_steps)


def angular_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = circular_distance(np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64))
    return {
        "mae": float(err.mean()),
        "acc5": float((err <= 5).mean() * 100),
        "acc20": float((err <= 20).mean() * 100),
    }


def train(cfg: DoaTrainConfig, bank: SoundBank | None = None, progress: bool = True) -> dict[str, float]:
    """Train (or resume) until ``max_steps`` or ``max_minutes``; returns the last validation metrics.

    The run holds a lock on ``out`` throughout: a second run on the same file would branch from it and
    overwrite its steps, so it is refused at once."""
    if cfg.posterior_loss not in POSTERIOR_LOSSES:
        raise ValueError(f"posterior_loss must be one of {POSTERIOR_LOSSES}, got {cfg.posterior_loss!r}")
    if cfg.mask_target not in MASK_TARGETS:
        raise ValueError(f"mask_target must be one of {MASK_TARGETS}, got {cfg.mask_target!r}")
    unused = unused_settings(cfg)
    if unused:
        raise ValueError(f"{', '.join(unused)} set the selective model only; the {cfg.model} does not read them")
    if cfg.generated_categories and cfg.prompt == "category":
        raise ValueError(
            "generated_categories needs a prompt clip (audio or descriptor): a category embedding cannot name them"
        )
    if cfg.generated_categories < 0 or not 0 <= cfg.generated_share <= 1:
        raise ValueError(
            f"generated_categories must be >= 0 and generated_share in [0, 1], got {cfg.generated_categories} "
            f"and {cfg.generated_share}"
        )
    if cfg.generated_categories and not 2 <= cfg.generated_instances <= MAX_INSTANCES:
        raise ValueError(f"generated_instances must be in 2..{MAX_INSTANCES}, got {cfg.generated_instances}")
    cfg = replace(cfg, device=str(resolve_device(cfg.device, key="--device")))  # "auto" becomes a device
    out = Path(cfg.out)

    def in_use() -> DoaCheckpointError:
        return DoaCheckpointError(
            f"checkpoint {out} is being written by another training process (it holds {out_lock(out)}); "
            "wait for it to finish, or give another --out"
        )

    with (
        exclusive_lock(out_lock(out), f"DoA checkpoint {out}", busy=in_use) as held,
        torch_threads(cfg.threads),
        preserved_torch_rng(cfg.device),  # seeded by cfg.seed for the run, the caller's again after it
    ):
        if held:  # without a lock another run's save may be in flight
            remove_stale_out_temporaries(out)
        return _train_holding_out(cfg, out, bank, progress)


def _train_holding_out(cfg: DoaTrainConfig, out: Path, bank: SoundBank | None, progress: bool) -> dict[str, float]:
    resumed = read_checkpoint(out) if out.exists() else None  # before the pools: a bad file stops at once
    history = check_resumable(resumed, cfg, out) if resumed is not None else []
    # what the training poses are rendered from, compared before any pool is rendered (or a cached one replaced)
    check_rooms(cfg)
    kinds = ["shoebox", "scenes"] if cfg.rooms == "both" else [cfg.rooms]
    sources = {rooms: pool_source(cfg, rooms, "train") for rooms in kinds}
    versions = {rooms: renderer_version(rooms)[1] for rooms in kinds}
    if resumed is not None:
        recorded = resumed.get("pool_versions") or {}
        check_same_pool_sources(
            resumed.get("pool_sources"),
            sources,
            out,
            lambda rooms, old: source_change(cfg, rooms, "train", old, recorded.get(rooms)),
        )
    torch.manual_seed(cfg.seed)
    bank = bank or SoundBank.load()
    categories = bank.categories()  # the model's: generated categories are never a prompt at evaluation
    pool_args = (cfg, "train", cfg.train_poses, train_pool_seed(cfg.seed))
    train_pool = rir_pool(*pool_args)
    train_bank, generated = bank, frozenset()
    if cfg.generated_categories:
        train_bank = GeneratedBank(
            bank, cfg.generated_categories, cfg.generated_instances, cfg.seed, train_pool.sample_rate
        )
        generated = frozenset(train_bank.generated)
    sampler = DoaExampleSampler(
        train_bank,
        train_pool,
        "train",
        cfg.clip_seconds,
        categories=train_bank.categories(),
        targets=cfg.targets,
        device=cfg.device,
        distractor_window=cfg.distractor_window,
        augment=cfg.augment,
        mask_pool=rir_pool(*pool_args, direct_only=True) if cfg.mask_target == "direct" else None,
        generated=generated,
        generated_share=cfg.generated_share,
    )
    val_sampler = DoaExampleSampler(
        bank,
        rir_pool(cfg, "val", cfg.val_poses, VAL_POOL_SEED),
        "val",
        cfg.clip_seconds,
        categories=categories,
        distractor_window=cfg.distractor_window,
    )
    val_batch = val_sampler.sample(cfg.val_examples, 0.0, np.random.default_rng(7))
    model = build_model(cfg.model, cfg, categories).to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, metrics = 0, {}
    if resumed is not None:
        try:
            model.load_state_dict(resumed["state_dict"])
        except RuntimeError as err:  # another architecture (widths, prompt or mask head) under the same kind
            raise DoaCheckpointError(f"checkpoint {out} does not fit this configuration: {err}") from err
        if resumed.get("optimizer"):
            optimizer.load_state_dict(resumed["optimizer"])
        step, metrics = int(resumed["step"]), dict(resumed.get("metrics", {}))
        logger.info("resumed %s from %s at step %d", cfg.model, out, step)
    elif cfg.init_from:
        start_from_weights(model, cfg.model, Path(cfg.init_from))
    rng = np.random.default_rng(cfg.seed * 100003 + step)
    if resumed is not None and resumed.get("rng"):  # older checkpoints: a stream seeded from the step
        restore_rng(rng, resumed["rng"], cfg.device, out)
    logger.info(
        "training %s DoA head (%d parameters) on %d target sounds",
        cfg.model,
        sum(p.numel() for p in model.parameters()),
        len(sampler.targets),
    )
    start = time.monotonic()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.model} DoA", disable=not progress, **bar_pacing(5))
    model.train()
    with stop_between_updates():  # a SIGTERM / Ctrl-C (with the handlers installed) ends the step first
        while step < cfg.max_steps and (time.monotonic() - start) < cfg.max_minutes * 60 and not stop_requested():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            lift = snr_lift(cfg, step)
            batch = sampler.sample(cfg.batch_size, (cfg.snr_low + lift, cfg.snr_high + lift), rng)
            loss, parts = optimization_step(model, optimizer, batch, cfg)
            step += 1
            bar.update(1)
            loss_value = loss.item()  # float(loss) on a tensor that requires grad warns at every step
            # drawn at the bar's own pace (the default refresh=True redraws every step, into log files too)
            bar.set_postfix(loss=f"{loss_value:.4f}", **{k: f"{v:.4f}" for k, v in parts.items()}, refresh=False)
            if step % cfg.val_every == 0:
                metrics = angular_metrics(predict(model, val_batch), val_batch.azimuth.numpy())
                logger.info("step %d loss %.4f %s val(0 dB) %s", step, loss_value, parts, metrics)
            if step % cfg.checkpoint_every == 0:
                save_checkpoint(
                    out, cfg.model, model, optimizer, step, cfg, metrics, rng, cfg.device, history, sources, versions
                )
        bar.close()
        metrics = angular_metrics(predict(model, val_batch), val_batch.azimuth.numpy())
        save_checkpoint(
            out, cfg.model, model, optimizer, step, cfg, metrics, rng, cfg.device, history, sources, versions
        )
        if stop_requested():
            logger.info("stopped at step %d; %s holds it and the same command resumes", step, out)
            raise_if_stopped()
    minutes = (time.monotonic() - start) / 60
    if step < cfg.max_steps:  # a head cut short stopped high on its cosine schedule: not to pass for a finished one
        logger.warning(
            "%s: the time budget (--max-minutes %g) ended training at step %d of --max-steps %d, its learning rate "
            "still %.2g of %.2g; val(0 dB) %s. %s holds it: the same command with a larger --max-minutes resumes",
            cfg.model, cfg.max_minutes, step, cfg.max_steps, learning_rate(cfg, step), cfg.lr, metrics, out,
        )  # fmt: skip
    else:
        logger.info("finished %s at step %d after %.1f min; val(0 dB) %s", cfg.model, step, minutes, metrics)
    return metrics
