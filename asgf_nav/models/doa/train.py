"""Training of DoA heads (the selective network and the audio-only CRNN) with atomic, resumable checkpoints.

Examples are generated on the fly from an RIR pool and the sound bank's training sounds, so every step
sees new mixtures. A checkpoint holds the model kind, its config, weights, optimizer state, the step and
the category list; :func:`load_model` rebuilds a frozen model from one.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from asgf_nav.devices import cuda_rng_state, resolve_device, restore_cuda_rng_state
from asgf_nav.io import atomic_write, exclusive_lock
from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
from asgf_nav.models.doa.data import DISTRACTOR_WINDOWS, TARGET_KINDS, DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.features import StftConfig, binaural_stft, circular_distance, compressed_magnitude
from asgf_nav.models.doa.network import (
    POSTERIOR_LOSSES,
    DoaNetConfig,
    SelectiveDoaNet,
    doa_loss,
    posterior_loss,
)
from asgf_nav.models.doa.pools import ROOM_KINDS, VAL_POOL_SEED, pool_source, rir_pool, train_pool_seed
from asgf_nav.sounds.bank import SoundBank
from asgf_nav.sounds.families import MAX_INSTANCES, GeneratedBank
from asgf_nav.termination import raise_if_stopped, stop_between_updates, stop_requested

logger = logging.getLogger(__name__)

MODEL_KINDS = ("selective", "crnn")


@dataclass
class DoaTrainConfig:
    """Hyper-parameters of one DoA training run (command-line arguments of scripts/pretrain_doa.py)."""

    model: str = "selective"  # selective | crnn
    prompt: str = "audio"  # audio | descriptor | category (selective only)
    mask_head: str = "template"  # template | mlp (selective only; see network.py)
    mask_target: str = "received"  # received | direct: what the mask learns to reconstruct (see MASK_TARGETS)
    init_from: str = ""  # a DoA checkpoint whose weights a new run starts from (fine-tuning); "" = random
    out: str = "data/doa/selective.pt"  # the checkpoint written (and resumed from)
    pool_dir: str = "data/doa/pools"  # cache of the rendered RIR pools
    rooms: str = "shoebox"  # shoebox | scenes | both (scenes need scenes_root) | shoebox_pair (AV-SSAN's array)
    scenes_root: str = ""  # baked scene data root, for rooms = scenes | both
    scenes_dataset: str = "replica"  # which baked scene set
    train_poses: int = 600  # listener poses of the training RIR pool
    val_poses: int = 60  # listener poses of the validation RIR pool
    sources_per_pose: int = 6  # source positions rendered per listener pose
    batch_size: int = 24  # mixtures per step
    lr: float = 2e-3  # AdamW learning rate at the start
    lr_final_fraction: float = 0.05  # cosine decay from lr to lr * this at max_steps
    weight_decay: float = 1e-4  # AdamW weight decay
    doa_weight: float = 10.0  # weight of the posterior loss against the mask loss
    posterior_loss: str = "mse"  # mse (AV-SSAN) | cross_entropy (see network.posterior_loss)
    snr_low: float = -5.0  # training target-to-distractor ratios (dB) are drawn from [snr_low, snr_high]
    snr_high: float = 5.0  # see snr_low
    curriculum_db: float = 0.0  # the SNR range may start this much higher (a cleaner target) ...
    curriculum_steps: int = 4000  # ... and falls linearly to [snr_low, snr_high] over these steps
    clip_seconds: float = 0.5  # length of each clip, at most the bank's 1 s
    targets: str = "all"  # all | line_of_sight (training targets only where the direct path is audible)
    distractor_window: str = "drawn"  # drawn | loudest (see DoaExampleSampler; validation clips follow it)
    augment: bool = False  # training sounds in random playback rates and spectral envelopes (augment.py)
    generated_categories: int = 0  # made-up training categories added to the bank's (sounds/families.py); 0 = none
    generated_instances: int = 4  # instances rendered per generated category (one prompts another)
    generated_share: float = 0.5  # share of training targets (and, drawn apart, distractors) that are generated
    bin_width: float = 5.0  # azimuth bin width (degrees) of the posterior
    patch_dim: int = 48  # width of the band-patch encoder's output
    model_dim: int = 48  # width of the attention layers
    stft_nfft: int = 512  # the selective head's STFT frame length (see selective_stft: bins and bands scale)
    stft_hop: int = 384  # samples between the selective head's STFT frames (finer frames: more onsets)
    max_steps: int = 20000  # training stops after this many steps ...
    max_minutes: float = 15.0  # ... or after this many minutes, whichever comes first
    checkpoint_every: int = 50  # steps between checkpoints
    val_every: int = 200  # steps between validations
    val_examples: int = 192  # validation clips (validation rooms and sounds)
    seed: int = 0  # seed of the training clips and the training RIR pool
    threads: int = 2  # torch threads
    device: str = "cpu"  # cpu | cuda | auto: where examples are rendered and the model trains


# settings a run resumed from --out may change: how long, where and how fast it runs, how often it validates
# and saves, and where its files are; every other one changes what the head learns, so a resume refuses it
RESUMABLE_TRAIN_KEYS = frozenset(
    {"max_steps", "max_minutes", "checkpoint_every", "val_every", "val_examples", "threads", "device", "out",
     "pool_dir", "scenes_root"}
)  # fmt: skip


# --------------------------------------------------------------------------------------------- choices
# the values each string field of DoaTrainConfig may take (scripts/pretrain_doa.py offers them as choices)
TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODEL_KINDS, "prompt": ("audio", "descriptor", "category"), "mask_head": ("template", "mlp"),
    "rooms": ROOM_KINDS, "posterior_loss": POSTERIOR_LOSSES, "targets": TARGET_KINDS,
    "distractor_window": DISTRACTOR_WINDOWS, "mask_target": ("received", "direct"),
}  # fmt: skip
# received: the target as the receiver hears it, reflections and tail included (AV-SSAN's target-only
# spectrogram); direct: only its direct sound, the one part whose direction is the label
MASK_TARGETS = TRAIN_CHOICES["mask_target"]
STFT_SIZES = (256, 512, 1024)  # the selective head's frame lengths (stft_nfft)


# --------------------------------------------------------------------------------------------- models


def selective_stft(cfg: DoaTrainConfig) -> dict[str, Any]:
    """The selective head's STFT and band widths for ``cfg.stft_nfft``: the bands keep their width in Hz
    (32 and 128 bins of a 512-point frame, 1 and 4 kHz at 16 kHz), so a shorter frame has narrower bands."""
    n_fft, hop = cfg.stft_nfft, cfg.stft_hop
    if n_fft not in STFT_SIZES:
        raise ValueError(f"stft_nfft must be one of {STFT_SIZES}, got {n_fft}")
    if not 0 < hop <= n_fft:
        raise ValueError(f"stft_hop must be in 1..stft_nfft ({n_fft}) so that no sample is skipped, got {hop}")
    scale = n_fft // 256  # 1, 2 or 4
    return {
        "stft": StftConfig(n_fft=n_fft, hop=hop, num_bins=n_fft // 2),
        "band_widths": (16 * scale, 64 * scale),
    }


def build_model(
    kind: str,
    cfg: DoaTrainConfig | None = None,
    categories: list[str] | None = None,
    config: dict | None = None,
) -> torch.nn.Module:
    """A fresh model of ``kind``; ``config`` (from a checkpoint) overrides the training config."""
    if kind == "selective":
        if config is not None:
            return SelectiveDoaNet(DoaNetConfig.from_dict(config))
        cats = list(categories or [])
        return SelectiveDoaNet(
            DoaNetConfig(
                bin_width=cfg.bin_width,
                prompt=cfg.prompt,
                patch_dim=cfg.patch_dim,
                model_dim=cfg.model_dim,
                num_categories=len(cats),
                categories=cats,
                mask_head=cfg.mask_head,
                **selective_stft(cfg),
            )
        )
    if kind == "crnn":
        return SeldCrnn(CrnnConfig.from_dict(config) if config is not None else CrnnConfig(bin_width=cfg.bin_width))
    raise ValueError(f"unknown DoA model kind {kind!r}; expected one of {MODEL_KINDS}")


def model_prompt(model: torch.nn.Module, batch: DoaBatch) -> torch.Tensor:
    """What the model takes as its prompt: the reference clip or the category index."""
    if isinstance(model, SelectiveDoaNet) and model.cfg.prompt == "category":
        return batch.category
    return batch.prompt


def save_checkpoint(
    path: str | Path,
    kind: str,
    model: torch.nn.Module,
    optimizer,
    step: int,
    train_cfg: DoaTrainConfig,
    metrics: dict,
    rng: np.random.Generator | None = None,
    device: torch.device | str = "cpu",
    history: list[dict[str, Any]] | None = None,
    pool_sources: dict[str, str] | None = None,
) -> None:
    """``train_config`` holds the settings of the latest stretch of training; ``train_config_history`` keeps
    what each resume changed (``{"step": s, "changed": {key: [old, new]}}``), so the earlier steps' settings
    are not lost; ``pool_sources`` what the training poses were rendered from (:func:`pool_source`)."""
    payload = {
        "kind": kind,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "train_config": asdict(train_cfg),
        "train_config_history": list(history or []),
        "pool_sources": dict(pool_sources or {}),
        "metrics": metrics,
        "rng": capture_rng(rng, device) if rng is not None else None,
    }
    atomic_write(path, lambda p: torch.save(payload, p))


def capture_rng(examples: np.random.Generator, device: torch.device | str) -> dict[str, Any]:
    """The example stream's generator and torch's (dropout; the training GPU's CUDA generator): with them
    a resumed training draws what the uninterrupted one would have."""
    return {"examples": examples.bit_generator.state, "torch": torch.get_rng_state(), "cuda": cuda_rng_state(device)}


def restore_rng(examples: np.random.Generator, state: dict[str, Any], device: torch.device | str, path: Path) -> None:
    try:
        examples.bit_generator.state = state["examples"]
        torch.set_rng_state(state["torch"].cpu())
        restore_cuda_rng_state(state.get("cuda"), device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise DoaCheckpointError(
            f"checkpoint {path}: unreadable generator state ({exc!r}); another --out starts afresh"
        ) from exc


class DoaCheckpointError(ValueError):
    """A DoA checkpoint that is not readable, holds no usable DoA model or cannot be continued by this run;
    the message names the file."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict stored by :func:`save_checkpoint` at ``path``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - unpickling a corrupt or foreign file can raise nearly anything
        raise DoaCheckpointError(f"DoA checkpoint {path} is not readable as a torch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or not {"kind", "state_dict"} <= ckpt.keys():
        raise DoaCheckpointError(f"DoA checkpoint {path} is not a valid DoA model: it holds no 'kind' and 'state_dict'")
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """The model stored in checkpoint ``path``, in eval mode with gradients off."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DoA checkpoint {path} does not exist; train one with scripts/pretrain_doa.py")
    ckpt = read_checkpoint(path, map_location)
    try:
        model = build_model(ckpt["kind"], config=ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise DoaCheckpointError(f"DoA checkpoint {path} is not a valid DoA model: {err}") from err
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.trained_on_rooms = (ckpt.get("train_config") or {}).get("rooms")  # checked by the benchmark
    return model


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


def learning_rate(cfg: DoaTrainConfig, step: int) -> float:
    """Cosine decay over ``max_steps``; a function of the step alone, so resumed runs follow the same curve."""
    progress = min(max(step / max(cfg.max_steps, 1), 0.0), 1.0)
    final = cfg.lr * cfg.lr_final_fraction
    return final + (cfg.lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


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


def train_config_changes(saved: dict[str, Any], cfg: DoaTrainConfig) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each setting outside :data:`RESUMABLE_TRAIN_KEYS` that differs.

    A key the checkpoint lacks (added since it was written) is not compared: it cannot say what it was."""
    current = asdict(cfg)
    return [
        (key, saved[key], current[key])
        for key in current
        if key in saved and key not in RESUMABLE_TRAIN_KEYS and saved[key] != current[key]
    ]


def check_resumable(resumed: dict[str, Any], cfg: DoaTrainConfig, out: Path) -> list[dict[str, Any]]:
    """Refuse (naming each flag, old -> new) to continue checkpoint ``out`` with settings that change what the
    head learns; returns its ``train_config_history`` with this resume's changes of resumable ones added."""
    if resumed["kind"] != cfg.model:
        raise DoaCheckpointError(
            f"checkpoint {out} holds a {resumed['kind']!r} model, not {cfg.model!r}; another --out starts afresh"
        )
    saved = resumed.get("train_config")
    history = list(resumed.get("train_config_history") or [])
    if not isinstance(saved, dict):
        logger.warning("checkpoint %s records no training settings; this resume cannot check them", out)
        return history
    refused = train_config_changes(saved, cfg)
    if refused:
        listed = ", ".join(f"--{key.replace('_', '-')}: {old!r} -> {new!r}" for key, old, new in refused)
        allowed = ", ".join(f"--{key.replace('_', '-')}" for key in sorted(RESUMABLE_TRAIN_KEYS))
        raise DoaCheckpointError(
            f"checkpoint {out} was trained with other settings ({listed}); a resumed run may change only {allowed}. "
            "Rerun with the checkpoint's settings to continue it, or give another --out to start afresh"
        )
    current = asdict(cfg)
    changed = {key: [saved[key], current[key]] for key in current if key in saved and saved[key] != current[key]}
    if changed:
        history.append({"step": int(resumed["step"]), "changed": changed})
        logger.info("%s continues with %s", out, ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    if "max_steps" in changed:  # the cosine now ends at the new last step: the rate steps to its value there
        step = int(resumed["step"])
        before = learning_rate(replace(cfg, max_steps=int(saved["max_steps"])), step)
        logger.info("learning rate at step %d: %.3g -> %.3g (the schedule ends at step %d)", step, before,
                    learning_rate(cfg, step), cfg.max_steps)  # fmt: skip
    return history


def check_same_pool_sources(saved: dict[str, str] | None, sources: dict[str, str], out: Path) -> None:
    """Refuse to continue ``out`` on training poses rendered from other data (``--scenes-root`` may move,
    not change what the head hears); checkpoints that recorded none are not compared."""
    changed = {rooms: (saved[rooms], now) for rooms, now in sources.items() if saved and saved.get(rooms, now) != now}
    if changed:
        listed = ", ".join(f"{rooms}: {old} -> {new}" for rooms, (old, new) in changed.items())
        raise DoaCheckpointError(
            f"checkpoint {out} was trained on RIR pools rendered from other data ({listed}); point --scenes-root "
            "at the scenes it was trained on, or give another --out to start afresh"
        )


def out_lock(out: Path) -> Path:
    """The file whose lock a training run holds while it writes ``out``."""
    return out.with_name(f".{out.name}.lock")


def remove_stale_out_temporaries(out: Path) -> None:
    """Delete the temporaries a save of ``out`` killed outright (SIGKILL, the OOM killer) left beside it;
    only while holding :func:`out_lock`, which keeps out every other writer of ``out``."""
    name = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{8}}\.tmp")  # what io.atomic_write names them
    if not out.parent.is_dir():
        return
    for path in out.parent.iterdir():
        if name.fullmatch(path.name) and path.is_file():
            logger.info("removing %s, left by a save of %s that was killed", path, out)
            path.unlink(missing_ok=True)


def start_from_weights(model: torch.nn.Module, kind: str, path: Path) -> None:
    """Load the weights of checkpoint ``path`` into a new run's ``model`` (fine-tuning: the step, optimizer and
    schedule start afresh); refuses another kind, architecture or category list."""
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: DoA checkpoint {path} does not exist")
    ckpt = read_checkpoint(path)
    if ckpt["kind"] != kind:
        raise DoaCheckpointError(f"--init-from: {path} holds a {ckpt['kind']!r} model, not {kind!r}")
    saved_categories = (ckpt.get("config") or {}).get("categories")
    if saved_categories is not None and saved_categories != getattr(model.cfg, "categories", saved_categories):
        raise DoaCheckpointError(f"--init-from: {path} was trained on another category list than the sound bank's")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise DoaCheckpointError(f"--init-from: {path} does not fit this configuration: {err}") from err
    logger.info("starting from the weights of %s (trained %s steps)", path, ckpt.get("step", "?"))


def train(cfg: DoaTrainConfig, bank: SoundBank | None = None, progress: bool = True) -> dict[str, float]:
    """Train (or resume) until ``max_steps`` or ``max_minutes``; returns the last validation metrics.

    The run holds a lock on ``out`` throughout: a second run on the same file would branch from it and
    overwrite its steps, so it is refused at once."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.posterior_loss not in POSTERIOR_LOSSES:
        raise ValueError(f"posterior_loss must be one of {POSTERIOR_LOSSES}, got {cfg.posterior_loss!r}")
    if cfg.mask_target not in MASK_TARGETS:
        raise ValueError(f"mask_target must be one of {MASK_TARGETS}, got {cfg.mask_target!r}")
    if cfg.mask_target != "received" and cfg.model != "selective":
        raise ValueError(f"mask_target {cfg.mask_target!r} needs the selective model; the {cfg.model} has no mask")
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

    with exclusive_lock(out_lock(out), f"DoA checkpoint {out}", busy=in_use) as held:
        if held:  # without a lock another run's save may be in flight
            remove_stale_out_temporaries(out)
        return _train_holding_out(cfg, out, bank, progress)


def _train_holding_out(cfg: DoaTrainConfig, out: Path, bank: SoundBank | None, progress: bool) -> dict[str, float]:
    resumed = read_checkpoint(out) if out.exists() else None  # before the pools: a bad file stops at once
    history = check_resumable(resumed, cfg, out) if resumed is not None else []
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
    kinds = ["shoebox", "scenes"] if cfg.rooms == "both" else [cfg.rooms]
    sources = {rooms: pool_source(cfg, rooms, "train") for rooms in kinds}
    if resumed is not None:
        check_same_pool_sources(resumed.get("pool_sources"), sources, out)
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
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.model} DoA", disable=not progress, mininterval=5)
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
            bar.set_postfix(loss=f"{loss_value:.4f}", **{k: f"{v:.4f}" for k, v in parts.items()})
            if step % cfg.val_every == 0:
                metrics = angular_metrics(predict(model, val_batch), val_batch.azimuth.numpy())
                logger.info("step %d loss %.4f %s val(0 dB) %s", step, loss_value, parts, metrics)
            if step % cfg.checkpoint_every == 0:
                save_checkpoint(out, cfg.model, model, optimizer, step, cfg, metrics, rng, cfg.device, history, sources)
        bar.close()
        metrics = angular_metrics(predict(model, val_batch), val_batch.azimuth.numpy())
        save_checkpoint(out, cfg.model, model, optimizer, step, cfg, metrics, rng, cfg.device, history, sources)
        if stop_requested():
            logger.info("stopped at step %d; %s holds it and the same command resumes", step, out)
            raise_if_stopped()
    logger.info(
        "stopped %s at step %d after %.1f min; val(0 dB) %s",
        cfg.model,
        step,
        (time.monotonic() - start) / 60,
        metrics,
    )
    return metrics


def export_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """Copy ``checkpoint`` without its optimizer state (small enough to ship with the package)."""
    ckpt = read_checkpoint(checkpoint)
    ckpt["optimizer"] = ckpt["rng"] = None
    ckpt["state_dict"] = {k: v.contiguous() for k, v in ckpt["state_dict"].items()}
    atomic_write(out, lambda p: torch.save(ckpt, p))
    logger.info("exported DoA weights %s -> %s (%.2f MB)", checkpoint, out, Path(out).stat().st_size / 1e6)
    return Path(out)
