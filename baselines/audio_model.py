"""Supervised audio model of the Direction Follower and Gan et al. baselines, and its training data.

One small CNN reads the binaural spectrogram (F, T, 2) and predicts, in the agent's frame:

- ``direction``: logits over ``NUM_DIRECTION_BINS`` bins of the source azimuth (bin 0 straight ahead,
  counter-clockwise = to the left, as habitat's compass; samples at the source itself have none and do
  not train it),
- ``close``: logit of "the goal is within the success distance" (geodesic), the stop signal,
- ``position``: the source position (forward, left) in metres.

Labels come from the episodes' geometry only (receiver node, source node, yaw); samples are drawn from
the train split's scenes, sounds and acoustic source nodes, the validation samples at source nodes held out
of training (:func:`split_geometry`). The Direction Follower uses the direction and close heads, Gan et al.
only the position head (it stops on its own goal estimate, never on ``close``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
from asgf_nav.acoustics.rir import RENDER_VERSION
from asgf_nav.config import is_whole_number
from asgf_nav.devices import preserved_torch_rng
from asgf_nav.io import atomic_write
from asgf_nav.logging_utils import bar_pacing
from asgf_nav.rl.checkpoint import CheckpointError, warn_if_trained_at_other_versions
from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file, weights_mismatch
from asgf_nav.tasks.navigation import pointgoal_polar
from asgf_nav.tasks.spectrogram import TorchSpectrogram
from asgf_nav.tasks.world import TaskWorld, binaural_rirs
from baselines.recipe import EPOCHS, PATIENCE

logger = logging.getLogger(__name__)

NUM_DIRECTION_BINS = 8
MODEL_VERSION = 1
# direction label of a sample heard at the source itself: it has no direction (pointgoal_polar's phi = -pi
# there is arbitrary), so the direction loss and accuracy skip it
NO_DIRECTION = -1


def direction_bin(phi: np.ndarray | float, bins: int = NUM_DIRECTION_BINS) -> np.ndarray:
    """Bin of an agent-frame azimuth (radians, left positive); bin k is centred on k * 360 / bins degrees."""
    width = 2 * math.pi / bins
    return (np.floor((np.asarray(phi) % (2 * math.pi) + width / 2) / width) % bins).astype(np.int64)


def bin_angle(index: np.ndarray | int, bins: int = NUM_DIRECTION_BINS) -> np.ndarray:
    """Centre azimuth (radians, left positive, in (-pi, pi]) of direction bins."""
    angle = np.asarray(index, dtype=np.float64) * 2 * math.pi / bins
    return np.where(angle > math.pi, angle - 2 * math.pi, angle)


class AudioGoalNet(nn.Module):
    """Conv(2-16-32-64) on the log spectrogram -> 128-d feature -> direction / close / position heads."""

    def __init__(self, spectrogram_shape: Sequence[int], bins: int = NUM_DIRECTION_BINS) -> None:
        super().__init__()
        self.spectrogram_shape = tuple(int(s) for s in spectrogram_shape)
        self.bins = bins
        self.features = nn.Sequential(
            nn.BatchNorm2d(2),
            nn.Conv2d(2, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),
            nn.Linear(64 * 16, 128), nn.ReLU(),
        )  # fmt: skip
        self.direction = nn.Linear(128, bins)
        self.close = nn.Linear(128, 1)
        self.position = nn.Linear(128, 2)

    def forward(self, spectrogram: torch.Tensor) -> dict[str, torch.Tensor]:
        """``spectrogram`` (B, F, T, 2) as the env gives it."""
        h = self.features(spectrogram.float().permute(0, 3, 1, 2))
        return {"direction": self.direction(h), "close": self.close(h).squeeze(-1), "position": self.position(h)}


@dataclass
class AudioSamples:
    spectrogram: torch.Tensor  # (N, F, T, 2)
    direction: torch.Tensor  # (N,) long
    close: torch.Tensor  # (N,) float 0/1
    position: torch.Tensor  # (N, 2) float, (forward, left) metres


def sample_geometry(
    world: TaskWorld,
    count: int,
    sounds: Sequence[str],
    seed: int | Sequence[int],
    success_distance: float = 1.0,
    near_fraction: float = 0.3,
    sources: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, int, int, int, str]]:
    """(scene, receiver, source, yaw, sound) tuples, drawn with replacement; ``near_fraction`` of them within 2x
    the success distance. ``sources`` limits each scene's source nodes (a scene it gives none is skipped)."""
    rng = np.random.default_rng(seed)
    pools = {
        name: np.asarray(world.scene(name).source_nodes if sources is None else sources.get(name, ()), dtype=np.int64)
        for name in sorted(world.scenes)
    }
    names = [name for name, pool in pools.items() if pool.size]
    if not names:
        raise ValueError(f"no source nodes to draw samples from in scenes {sorted(world.scenes)}")
    out = []
    for _ in range(count):
        scene = world.scene(names[int(rng.integers(len(names)))])
        pool = pools[scene.name]
        source = int(pool[int(rng.integers(pool.size))])
        dist = np.asarray(scene.geodesic_hops[:, source]) * scene.grid_size
        reachable = np.flatnonzero(np.asarray(scene.geodesic_hops[:, source]) >= 0)
        if rng.random() < near_fraction:
            near = reachable[dist[reachable] < 2 * success_distance]
            reachable = near if near.size else reachable
        receiver = int(reachable[int(rng.integers(reachable.size))])
        out.append((scene.name, receiver, source, int(rng.integers(4)), str(sounds[int(rng.integers(len(sounds)))])))
    return out


def held_out_sources(world: TaskWorld, fraction: float, seed: int) -> dict[str, list[int]]:
    """Per scene, the source nodes whose samples only validate: ``fraction`` of them, at least one where the
    scene has two or more, none where it has one (its only source must train).

    Holding out whole source nodes keeps every validation (scene, receiver, source, yaw) out of the training
    samples, which repeated draws would otherwise share (for the heard sound: the same spectrogram)."""
    rng = np.random.default_rng([seed, 1])
    held = {}
    for name in sorted(world.scenes):
        nodes = np.asarray(world.scene(name).source_nodes, dtype=np.int64)
        count = min(max(1, int(round(fraction * nodes.size))), nodes.size - 1)
        held[name] = sorted(int(n) for n in rng.choice(nodes, size=count, replace=False)) if count > 0 else []
    if not any(held.values()):
        raise ValueError(
            f"scenes {sorted(world.scenes)} have one source node each: none can be held out for validation "
            "(bake more with acoustics.sources_per_scene)"
        )
    return held


def split_geometry(
    world: TaskWorld, train_count: int, val_count: int, seed: int, success_distance: float = 1.0, fraction: float = 0.1
) -> tuple[list[tuple[str, int, int, int, str]], list[tuple[str, int, int, int, str]], dict[str, list[int]]]:
    """Training and validation geometry (sound '-') at disjoint source nodes, and the held-out sources per scene
    (:func:`held_out_sources` with ``fraction``): validation samples share no geometry with training ones."""
    held = held_out_sources(world, fraction, seed)
    kept = {name: [int(n) for n in world.scene(name).source_nodes if int(n) not in held[name]] for name in held}
    train = sample_geometry(world, train_count, ["-"], seed, success_distance, sources=kept)
    val = sample_geometry(world, val_count, ["-"], [seed, 2], success_distance, sources=held)
    return train, val, {name: nodes for name, nodes in held.items() if nodes}


def render_rirs(
    world: TaskWorld, geometry: Sequence[tuple[str, int, int, int, str]], progress: bool = True
) -> list[np.ndarray]:
    """Binaural RIRs of each (scene, receiver, source, yaw, _); the costly part, shared by sound splits."""
    shown = tqdm(geometry, desc="render RIRs", unit="rir", disable=not progress, **bar_pacing())
    return binaural_rirs((world.scene(s), r, src, y) for s, r, src, y, _ in shown)


def build_samples(
    world: TaskWorld,
    geometry: Sequence[tuple[str, int, int, int, str]],
    success_distance: float = 1.0,
    batch: int = 64,
    progress: bool = True,
    rirs: Sequence[np.ndarray] | None = None,
) -> AudioSamples:
    """Spectrograms (as the env computes them) and geometric labels for each (scene, receiver, source, yaw, sound)."""
    if rirs is None:
        rirs = render_rirs(world, geometry, progress)
    if len(rirs) != len(geometry):
        raise ValueError(f"{len(rirs)} RIRs for {len(geometry)} samples")
    spec = TorchSpectrogram(world.sample_rate, "cpu")
    specs, directions, closes, positions = [], [], [], []
    for start in tqdm(range(0, len(geometry), batch), desc="spectrograms", disable=not progress, **bar_pacing()):
        part = geometry[start : start + batch]
        part_rirs = rirs[start : start + batch]
        sounds = torch.from_numpy(np.stack([world.sound(snd) for *_, snd in part]))
        specs.append(spec.from_rirs(sounds, list(part_rirs), batch))
        for s, r, src, y, _ in part:
            scene = world.scene(s)
            rho, phi = pointgoal_polar(np.asarray(scene.positions[r]), y, np.asarray(scene.positions[src]))
            directions.append(int(direction_bin(phi)) if r != src else NO_DIRECTION)
            closes.append(float(scene.geodesic_hops[r, src] * scene.grid_size < success_distance))
            positions.append((rho * math.cos(phi), rho * math.sin(phi)))
    return AudioSamples(
        torch.cat(specs), torch.tensor(directions), torch.tensor(closes), torch.tensor(positions, dtype=torch.float32)
    )


def losses(out: dict[str, torch.Tensor], samples: AudioSamples, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three heads' losses on the samples ``index``; samples without a direction add no direction loss."""
    direction = samples.direction[index]
    labelled = (direction != NO_DIRECTION).sum().clamp(min=1)  # a batch heard only at the source adds 0, not nan
    return {
        "direction": nn.functional.cross_entropy(
            out["direction"], direction, ignore_index=NO_DIRECTION, reduction="sum"
        )
        / labelled,
        "close": nn.functional.binary_cross_entropy_with_logits(out["close"], samples.close[index]),
        "position": nn.functional.smooth_l1_loss(out["position"], samples.position[index]),
    }


@torch.no_grad()
def evaluate_model(model: AudioGoalNet, samples: AudioSamples, batch: int = 256) -> dict[str, float]:
    """Direction accuracy (over the samples that have a direction), close accuracy and mean position error (m)."""
    model.eval()
    preds = [model(samples.spectrogram[i : i + batch]) for i in range(0, len(samples.direction), batch)]
    direction = torch.cat([p["direction"] for p in preds]).argmax(-1)
    close = torch.cat([p["close"] for p in preds]) > 0
    position = torch.cat([p["position"] for p in preds])
    return {
        "direction_accuracy": float((direction == samples.direction)[samples.direction != NO_DIRECTION].float().mean()),
        "close_accuracy": float((close == (samples.close > 0.5)).float().mean()),
        "position_error_m": float((position - samples.position).norm(dim=-1).mean()),
    }


@torch.no_grad()
def mean_loss(model: AudioGoalNet, samples: AudioSamples, batch: int = 256) -> float:
    """The training objective (the three losses summed) averaged over ``samples``, in eval mode."""
    model.eval()
    n = len(samples.direction)
    total = 0.0
    for start in range(0, n, batch):
        index = torch.arange(start, min(start + batch, n))
        total += float(sum(losses(model(samples.spectrogram[index]), samples, index).values())) * len(index)
    return total / n


@preserved_torch_rng()  # seeded by ``seed`` for the training, the caller's again after it
def train_model(
    train: AudioSamples,
    val: AudioSamples | None,
    epochs: int = EPOCHS,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    patience: int | None = PATIENCE,
) -> tuple[AudioGoalNet, dict[str, Any]]:
    """Adam on the sum of the three losses; returns the model and its validation (else training) scores.

    With validation samples the weights of the epoch with the lowest validation loss are kept, and training
    stops after ``patience`` epochs without a new lowest (None: all ``epochs``): a fixed short budget left the
    model underfitting (its training accuracy no higher than its validation accuracy)."""
    torch.manual_seed(seed)
    model = AudioGoalNet(train.spectrogram.shape[1:])
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train.direction)
    val_losses: list[float] = []
    best_state, best_epoch = None, 0
    for epoch in tqdm(range(epochs), desc="train audio model", disable=not progress, **bar_pacing()):
        model.train()
        order = torch.randperm(n)
        total = 0.0
        for start in range(0, n, batch):
            index = order[start : start + batch]
            if len(index) < 2:
                continue
            loss = sum(losses(model(train.spectrogram[index]), train, index).values())
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(index)
        if val is None:
            logger.info("epoch %d: train loss %.4f", epoch + 1, total / n)
            continue
        val_losses.append(mean_loss(model, val))
        logger.info("epoch %d: train loss %.4f, validation loss %.4f", epoch + 1, total / n, val_losses[-1])
        if val_losses[-1] < min(val_losses[:-1], default=math.inf):
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch + 1
        elif patience is not None and epoch + 1 - best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    scores: dict[str, Any] = evaluate_model(model, val if val is not None else train)
    if val is not None:
        scores |= {
            "best_epoch": best_epoch,
            "epochs_run": len(val_losses),
            "val_loss": [round(v, 4) for v in val_losses],
        }
    return model.eval(), scores


def chance_scores(train: AudioSamples, val: AudioSamples) -> dict[str, float]:
    """What predictors that ignore the sound score on ``val``: the training samples' most common direction
    bin and close label, and their mean position. The model's scores mean something only above these."""
    labelled = train.direction[train.direction != NO_DIRECTION]
    majority_bin = int(torch.bincount(labelled, minlength=NUM_DIRECTION_BINS).argmax()) if len(labelled) else 0
    majority_close = bool(train.close.mean() > 0.5)
    has_direction = val.direction != NO_DIRECTION
    return {
        "direction_accuracy": float((val.direction[has_direction] == majority_bin).float().mean()),
        "close_accuracy": float(((val.close > 0.5) == majority_close).float().mean()),
        "position_error_m": float((train.position.mean(dim=0) - val.position).norm(dim=-1).mean()),
    }


def save_model(path: str | Path, model: AudioGoalNet, meta: dict[str, Any], embedded: bool = True) -> Path:
    """Write the model atomically; ``embedded``: trained on the embedded scenes, whose acoustics and render
    versions it records (None for SoundSpaces data, whose responses come unversioned)."""
    state = {
        "version": MODEL_VERSION,
        "spectrogram_shape": model.spectrogram_shape,
        "bins": model.bins,
        "model": model.state_dict(),
        "meta": meta,
        # how the baked scenes' responses it learnt from were made: their acoustics, and how they were rendered
        "acoustics_version": ACOUSTICS_VERSION if embedded else None,
        "render_version": RENDER_VERSION if embedded else None,
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_model(
    path: str | Path,
    spectrogram_shape: Sequence[int] | None = None,
    keep_travel_time: bool | None = None,
    sound_split: str | None = None,
    heard_versions: dict[str, int] | None = None,
) -> AudioGoalNet:
    """The model :func:`save_model` wrote; a missing, unreadable or foreign file raises CheckpointError, and so
    does one trained on spectrograms of another shape than ``spectrogram_shape`` (the env's, when given): its
    adaptive pooling would accept them and predict nonsense. Given the env's ``task.keep_travel_time`` (baked
    scenes), a model trained with the other setting is loaded with a warning: the leading silence it learnt
    distances from is there or not. Given ``heard_versions`` (the embedded scenes' acoustics and render versions
    the env plays), a model trained on responses of others is loaded with a warning."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory; give the .pt file" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"baseline audio model {path} {problem} (train one with scripts/train_baselines.py; "
            "evaluate.py --baseline-model names another)"
        )
    try:
        state = load_torch_file(path)  # runs no code from the file: one from elsewhere is safe to read
    except UnsafeTorchFileError as exc:
        raise CheckpointError(f"baseline audio model {exc}") from None
    except Exception as exc:  # noqa: BLE001 - unpickling a corrupt or foreign file can raise nearly anything
        raise CheckpointError(f"baseline audio model {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != MODEL_VERSION:
        raise CheckpointError(f"{path} is not a baseline audio model of version {MODEL_VERSION}")
    model = _model_of(path, state)
    if spectrogram_shape is not None and model.spectrogram_shape != tuple(int(s) for s in spectrogram_shape):
        raise CheckpointError(
            f"baseline audio model {path} was trained on spectrograms of shape {model.spectrogram_shape}, but this "
            f"environment's are {tuple(int(s) for s in spectrogram_shape)} (another sample rate or dataset); "
            "train one on its data with scripts/train_baselines.py"
        )
    if heard_versions is not None:
        warn_if_trained_at_other_versions(
            f"baseline audio model {path}",
            state,
            heard_versions,
            "its figures on them may differ from a model trained again with scripts/train_baselines.py",
            logger,
        )
    trained_with = (state.get("meta") or {}).get("keep_travel_time", True)  # True: saved before the key
    if keep_travel_time is not None and trained_with is not None and bool(trained_with) != bool(keep_travel_time):
        logger.warning(
            "baseline audio model %s was trained with task.keep_travel_time=%s and is run with %s; its figures "
            "differ from a model trained with scripts/train_baselines.py on these responses",
            path,
            str(bool(trained_with)).lower(),
            str(bool(keep_travel_time)).lower(),
        )
    trained_split = (state.get("meta") or {}).get("sound_split")
    if sound_split is not None and trained_split is not None and trained_split != sound_split:
        logger.warning(
            "baseline audio model %s was trained on the %s sounds' split and is evaluated on %s sounds: its figures "
            "are not those of the %s baseline, which trains on its own split (scripts/train_baselines.py)",
            path,
            trained_split,
            sound_split,
            sound_split,
        )
    return model.eval()


def _is_count(value: Any) -> bool:
    return is_whole_number(value) and value > 0


def _model_of(path: Path, state: dict[str, Any]) -> AudioGoalNet:
    """The network a version-1 file records, with its weights; a file damaged or edited past its version
    check (an entry missing, of the wrong kind, or weights of another network) raises CheckpointError naming
    the entry, where it raised a bare KeyError, ValueError or size mismatch naming no file."""

    def damaged(entry: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"baseline audio model {path} is damaged: its {entry!r} entry {problem}; train it again with "
            "scripts/train_baselines.py (evaluate.py --baseline-model names another)"
        )

    for entry in ("spectrogram_shape", "bins", "model"):
        if entry not in state:
            raise damaged(entry, "is missing")
    shape, bins, weights = state["spectrogram_shape"], state["bins"], state["model"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(_is_count(n) for n in shape):
        raise damaged("spectrogram_shape", f"is {shape!r}, not 3 positive integers (F, T, 2)")
    if not _is_count(bins):
        raise damaged("bins", f"is {bins!r}, not a positive integer")
    if not isinstance(state.get("meta") or {}, dict):
        raise damaged("meta", f"is a {type(state['meta']).__name__}, not a mapping")
    if not isinstance(weights, Mapping):
        raise damaged("model", f"is a {type(weights).__name__}, not the network's weights")
    with torch.device("meta"):  # the file's shape and bins size the network: nothing allocated until weights fit
        shapes = AudioGoalNet(shape, bins).state_dict(keep_vars=True)
    mismatch = weights_mismatch(shapes, weights)
    if mismatch is not None:
        raise damaged("model", f"does not hold this network's weights ({mismatch})")
    model = AudioGoalNet(shape, bins)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError) as exc:  # missing, extra or resized
        problem = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise damaged("model", f"does not hold this network's weights ({problem})") from exc
    return model


def default_model_path(data_root: str | Path, dataset: str, sound_split: str) -> Path:
    return Path(data_root) / "baselines" / f"audio_goal_{dataset}_{sound_split}.pt"
