"""What a DoA training run is configured with and the values each setting may take.

Free of torch and of the modules that use it (the model a config builds is ``build.py``'s), so that the DoA
scripts answer ``--help`` and refuse a bad command line at once; the models, the data, the pools and the
benchmark read their choices and fixed numbers from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODEL_KINDS = ("selective", "crnn")
ROOM_KINDS = ("shoebox", "scenes", "both", "shoebox_pair")  # the RIR pools' rooms (pools.py)
# the distractor's stretch of its sound: a drawn start, or always its loudest (data.DoaExampleSampler)
DISTRACTOR_WINDOWS = ("drawn", "loudest")
TARGET_KINDS = ("all", "line_of_sight")  # which sources may be targets (data.DoaExampleSampler)
POSTERIOR_LOSSES = ("mse", "cross_entropy")  # network.posterior_loss
SBF_HEADS = 4  # attention heads of the SBF Transformer layer: model_dim is split among them (network.py)
GMM_PCA_DIMS = 24  # the GMM regression's PCA size: it needs at least this many training clips (classical.py)
# the pools' seeds: validation and test poses are fixed, a run's training pool is 1000 + its seed
VAL_POOL_SEED = 2000
TEST_POOL_SEED = 3000  # the benchmark's (asgf_nav/eval/doa_eval.py)
# the head's posterior sharpened by the templates (fusion.TemplateSharpening): chosen on validation clips
SHARPEN_SMOOTH_BINS = 1  # the head's posterior spread over this many bins on each side
SHARPEN_WEIGHT = 5.0  # nats of log-posterior per unit of template score


def train_pool_seed(seed: int) -> int:
    """The training pool's seed; refuses a seed whose pool would repeat the validation or test poses."""
    if 1000 + seed in (VAL_POOL_SEED, TEST_POOL_SEED):
        raise ValueError(
            f"DoA seed {seed}: its training pool (seed {1000 + seed}) would hold the validation (seed "
            f"{VAL_POOL_SEED}) or test (seed {TEST_POOL_SEED}) poses; choose another --seed"
        )
    return 1000 + seed


def check_bin_width(bin_width: float) -> None:
    """An azimuth bin width that divides 360 degrees (features.AzimuthGrid), or a ValueError that says so."""
    # bounded first: a width of 0 would divide by zero, and one past 360 (1e9, inf) would round to 0 bins
    if not 0 < bin_width <= 360 or abs(360.0 / bin_width - round(360.0 / bin_width)) > 1e-6:
        raise ValueError(f"azimuth bin width must divide 360 degrees, got {bin_width}")


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
# settings of the selective network alone: the CRNN builds from bin_width only and has no mask
SELECTIVE_ONLY = ("prompt", "mask_head", "mask_target", "patch_dim", "model_dim", "stft_nfft", "stft_hop")
MIN_CLIP_SECONDS = 0.1  # a few of the heads' frames (512 samples every 384 at 16 kHz); the heads train on 0.5 s


def unused_settings(cfg: DoaTrainConfig) -> list[str]:
    """The settings ``cfg`` changes from their defaults that its model does not read (``--prompt`` for the
    CRNN): they would be recorded, and later refuse a resume, without having changed anything."""
    if cfg.model == "selective":
        return []
    default = DoaTrainConfig()
    return [name for name in SELECTIVE_ONLY if getattr(cfg, name) != getattr(default, name)]


def learning_rate(cfg: DoaTrainConfig, step: int) -> float:
    """Cosine decay over ``max_steps``; a function of the step alone, so resumed runs follow the same curve
    (here rather than in train.py: :func:`checkpoint.check_resumable` logs how a new ``max_steps`` moves it)."""
    progress = min(max(step / max(cfg.max_steps, 1), 0.0), 1.0)
    final = cfg.lr * cfg.lr_final_fraction
    return final + (cfg.lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
