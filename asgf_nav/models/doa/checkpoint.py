"""DoA checkpoints: atomic saves, reading and loading them back, and the checks a resumed or fine-tuned run
passes before it continues one.

A checkpoint holds the model kind, its config, weights, optimizer state, the step, the training settings
and the generators' state; :func:`load_model` rebuilds a frozen model from one. Kept apart from the training
loop so that the observation and the benchmark load heads without importing it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.devices import cuda_rng_state, preserved_torch_rng, restore_cuda_rng_state
from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write, content_digest
from asgf_nav.logging_utils import shell_command
from asgf_nav.models.doa.build import build_model
from asgf_nav.models.doa.config import (
    RESUMABLE_TRAIN_KEYS,
    SELECTIVE_ONLY,
    DoaTrainConfig,
    learning_rate,
)
from asgf_nav.models.doa.pools import SHOEBOX_RECEIVERS
from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file, weights_mismatch

logger = logging.getLogger(__name__)

ENTRY_DIGESTS = "entry_digests"  # content_digest of every other entry, added by every save


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
    pool_versions: dict[str, int] | None = None,
) -> None:
    """``train_config`` holds the settings of the latest stretch of training; ``train_config_history`` keeps
    what each resume changed (``{"step": s, "changed": {key: [old, new]}}``), so the earlier steps' settings
    are not lost; ``pool_sources`` what the training poses were rendered from (``pools.pool_source``) and
    ``pool_versions`` the renderer version of each kind of room (``pools.renderer_version``: a scenes source
    is a digest, which does not say it)."""
    payload = {
        "kind": kind,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "train_config": asdict(train_cfg),
        "train_config_history": list(history or []),
        "pool_sources": dict(pool_sources or {}),
        "pool_versions": dict(pool_versions or {}),
        "metrics": metrics,
        "rng": capture_rng(rng, device) if rng is not None else None,
    }
    payload[ENTRY_DIGESTS] = {key: content_digest(value) for key, value in payload.items()}  # checked on reading
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


class DoaCheckpointError(UserInputError, ValueError):
    """A DoA checkpoint that is not readable, holds no usable DoA model or cannot be continued by this run;
    the message names the file."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict stored by :func:`save_checkpoint` at ``path``."""
    path = Path(path)
    try:
        ckpt = load_torch_file(path, map_location)  # runs no code from the file: one from elsewhere is safe to read
    except UnsafeTorchFileError as exc:
        raise DoaCheckpointError(f"DoA checkpoint {exc}") from None
    except Exception as err:  # noqa: BLE001 - unpickling a corrupt or foreign file can raise nearly anything
        raise DoaCheckpointError(f"DoA checkpoint {path} is not readable as a torch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or not {"kind", "state_dict"} <= ckpt.keys():
        raise DoaCheckpointError(f"DoA checkpoint {path} is not a valid DoA model: it holds no 'kind' and 'state_dict'")
    recorded = ckpt.pop(ENTRY_DIGESTS, None)  # None: written before digests were recorded
    if recorded is not None and not isinstance(recorded, dict):
        raise DoaCheckpointError(f"DoA checkpoint {path} is damaged: its {ENTRY_DIGESTS} entry is not a mapping")
    if recorded is not None:
        damaged = sorted(k for k in recorded.keys() | ckpt.keys() if recorded.get(k) != content_digest(ckpt.get(k)))
        if damaged:
            raise DoaCheckpointError(
                f"DoA checkpoint {path} is damaged: its entries {damaged} no longer match the digests saved with them"
            )
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu", kind: str | None = None) -> torch.nn.Module:
    """The model stored in checkpoint ``path``, in eval mode with gradients off; of ``kind`` when one is named."""
    path = Path(path)
    if not path.is_file():
        raise DoaCheckpointError(f"DoA checkpoint {path} does not exist; train one with scripts/pretrain_doa.py")
    ckpt = read_checkpoint(path, map_location)
    if kind is not None and ckpt["kind"] != kind:
        raise DoaCheckpointError(f"DoA checkpoint {path} holds a {ckpt['kind']!r} model, not a {kind!r} one")
    try:
        with torch.device("meta"):  # the file's config sizes the network: no allocation until its weights fit it
            shapes = build_model(ckpt["kind"], config=ckpt["config"]).state_dict(keep_vars=True)
        mismatch = weights_mismatch(shapes, ckpt["state_dict"])
        if mismatch is None:
            with preserved_torch_rng():  # initial weights, replaced by the file's: the caller's draws stay
                model = build_model(ckpt["kind"], config=ckpt["config"])
            model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise DoaCheckpointError(f"DoA checkpoint {path} is not a valid DoA model: {err}") from err
    if mismatch is not None:
        raise DoaCheckpointError(f"DoA checkpoint {path} is not a valid DoA model: {mismatch}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # checked by the benchmark: the receiver, and the renderers of the training pools
    model.trained_on_rooms = (ckpt.get("train_config") or {}).get("rooms")
    model.trained_pool_sources = dict(ckpt.get("pool_sources") or {})
    model.trained_pool_versions = dict(ckpt.get("pool_versions") or {})
    return model


def export_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """Copy ``checkpoint`` without its optimizer state (small enough to ship with the package)."""
    ckpt = read_checkpoint(checkpoint)
    ckpt["optimizer"] = ckpt["rng"] = None
    ckpt["state_dict"] = {k: v.contiguous() for k, v in ckpt["state_dict"].items()}
    ckpt[ENTRY_DIGESTS] = {key: content_digest(value) for key, value in ckpt.items()}
    atomic_write(out, lambda p: torch.save(ckpt, p))
    logger.info("exported DoA weights %s -> %s (%.2f MB)", checkpoint, out, Path(out).stat().st_size / 1e6)
    return Path(out)


def train_config_changes(saved: dict[str, Any], cfg: DoaTrainConfig) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each setting outside :data:`RESUMABLE_TRAIN_KEYS` that differs.

    A key the checkpoint lacks (added since it was written) is not compared: it cannot say what it was; nor is a
    setting the model does not read (the CRNN's ``--stft-hop``), which changed nothing it learned."""
    current = asdict(cfg)
    unread = SELECTIVE_ONLY if cfg.model != "selective" else ()
    return [
        (key, saved[key], current[key])
        for key in current
        if key in saved and key not in RESUMABLE_TRAIN_KEYS and key not in unread and saved[key] != current[key]
    ]


def check_resumable(resumed: dict[str, Any], cfg: DoaTrainConfig, out: Path) -> list[dict[str, Any]]:
    """Refuse (naming each flag, old -> new) to continue checkpoint ``out`` with settings that change what the
    head learns; returns its ``train_config_history`` with this resume's changes of resumable ones added."""
    if resumed["kind"] != cfg.model:
        raise DoaCheckpointError(
            f"checkpoint {out} holds a {resumed['kind']!r} model, not {cfg.model!r}; another --out starts afresh"
        )
    if "optimizer" in resumed and resumed["optimizer"] is None:  # export_weights leaves it and the RNG out
        raise DoaCheckpointError(
            f"checkpoint {out} holds exported weights only, without the optimizer and example-stream state a "
            f"resume continues; start a new run from them with --init-from {shell_command(out)} and another --out"
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


def check_same_pool_sources(
    saved: dict[str, str] | None,
    sources: dict[str, str],
    out: Path,
    explain: Callable[[str, str], tuple[str, bool]] | None = None,
) -> None:
    """Refuse to continue ``out`` on training poses rendered from other data (``--scenes-root`` may move,
    not change what the head hears); checkpoints that recorded none are not compared. ``explain(rooms, old)``
    says what differs and whether the renderer changed (``pools.source_change``)."""
    changed = {rooms: (saved[rooms], now) for rooms, now in sources.items() if saved and saved.get(rooms, now) != now}
    if not changed:
        return
    reasons = {rooms: explain(rooms, old) if explain else ("", False) for rooms, (old, _) in changed.items()}
    listed = "; ".join(
        f"{rooms}: {old} -> {new}" + (f", {reasons[rooms][0]}" if reasons[rooms][0] else "")
        for rooms, (old, new) in changed.items()
    )
    other_scenes = any(rooms not in SHOEBOX_RECEIVERS and not reasons[rooms][1] for rooms in changed)
    advice = "point --scenes-root at the scenes it was trained on, " if other_scenes else ""
    raise DoaCheckpointError(
        f"checkpoint {out} was trained on RIR pools rendered from other data ({listed}); no pool was rendered. "
        f"To go on, {advice}give another --out to train a new head, or fine-tune this one on the new pools with "
        f"--init-from {shell_command(out)} and another --out"
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
    planned = (ckpt.get("train_config") or {}).get("max_steps")
    if isinstance(planned, int) and isinstance(ckpt.get("step"), int) and ckpt["step"] < planned:
        logger.warning(
            "--init-from: %s stopped at step %d of the %d its run planned (its time budget or a stop ended it); "
            "resuming that run to its end first gives the weights its schedule meant",
            path, ckpt["step"], planned,
        )  # fmt: skip
