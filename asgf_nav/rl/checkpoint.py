"""Atomic training checkpoints (``ckpt_000050.pt``) keeping the newest K, the best-validated one
(``best.pt``), and the check that a resumed run is the run it continues (the RNG states it holds: ``rl/rng.py``)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
from asgf_nav.acoustics.rir import RENDER_VERSION
from asgf_nav.config import flatten_dotted
from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write, content_digest
from asgf_nav.logging_utils import shell_command
from asgf_nav.safe_load import UnsafeTorchFileError, load_torch_file
from asgf_nav.scenes.soundspaces_import import scene_source

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")
BEST_CHECKPOINT = "best.pt"  # outside CHECKPOINT_PATTERN: never pruned, never taken for the latest
REQUIRED_KEYS = ("model", "optimizer", "update", "frames", "rng", "config")
WEIGHTS_DIGEST = "weights_digest"  # policy_digest of "model", added by every save
STATE_DIGESTS = "state_digests"  # a digest of every other entry (optimizer, rng, rollout, ...), added by every save
# what this project's trainer writes (another project's checkpoint may hold the same names, e.g. a yacs config)
_ENTRY_TYPES = {"model": dict, "optimizer": dict, "update": int, "frames": int, "config": dict}
# config keys a resumed run may change: where and how fast it runs, how often it logs, validates and saves,
# what it caches, what only evaluation reads (task.test_episodes), (ppo.total_frames) how long it trains, and
# (scenes.rir_on_missing) whether a SoundSpaces RIR file found missing stops it or is heard as silence, counted
# (the error that stops a run names that setting); every other key changes the experiment itself
RESUMABLE_KEYS = frozenset(
    {
        "scenes.data_root", "scenes.soundspaces_root", "scenes.rir_cache_mb", "scenes.rir_on_missing",
        "scenes.workers",
        "task.doa_cache_size", "task.spectrogram_cache_size", "task.spectrogram_store", "task.test_episodes",
        "ppo.total_frames",
        "train.run_dir", "train.device", "train.torch_threads", "train.log_interval", "train.checkpoint_interval",
        "train.keep_checkpoints", "train.val_interval", "train.stats_window_episodes",
    }
)  # fmt: skip


# what made the responses a run hears on the embedded scenes: their baked acoustics (acoustics/bake.py
# ACOUSTICS_VERSION) and how those are rendered (acoustics/rir.py RENDER_VERSION); the keys evaluations record
# them under too (eval.report.ACOUSTICS_META_KEYS)
RESPONSE_VERSION_KEYS: tuple[str, ...] = ("acoustics_version", "render_version")
VERSION_CONSTANTS = {"acoustics_version": "ACOUSTICS_VERSION", "render_version": "RENDER_VERSION"}

# the temporary io.atomic_write makes beside a checkpoint it writes (".ckpt_000050.pt.1a2b3c4d.tmp")
STALE_TEMPORARY_PATTERN = re.compile(rf"\.(ckpt_\d+\.pt|{re.escape(BEST_CHECKPOINT)})\.[0-9a-f]{{8}}\.tmp")


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint file cannot be read or lacks required entries; the message names the file."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (ordered by update number)."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_checkpoint_temporaries(directory: str | Path) -> int:
    """Delete the checkpoint temporaries a save killed outright (SIGKILL, the OOM killer) left in
    ``directory`` (a run's checkpoints/; each one is as large as a checkpoint), and nothing else. The caller
    must be the run's only writer (it holds the run lock). Returns the bytes freed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    freed = 0
    for path in directory.iterdir():
        if STALE_TEMPORARY_PATTERN.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                freed += size
                logger.info("removed %s, left by a checkpoint save that was killed", path)
    return freed


def _write(path: Path, state: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    # digests checked on load: damage inside the weights or the optimizer's moments (a flipped bit) still
    # unpickles without a word, and a resume would go on from it
    state = {**state, WEIGHTS_DIGEST: policy_digest(state), STATE_DIGESTS: entry_digests(state)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as checkpoints/ckpt_{update:06d}.pt; delete all but the newest ``keep``."""
    path = checkpoint_dir(run_dir) / f"ckpt_{int(state['update']):06d}.pt"
    _write(path, state)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    logger.info("saved checkpoint %s", path)
    return path


def save_best_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically as checkpoints/best.pt, replacing the previous best."""
    path = checkpoint_dir(run_dir) / BEST_CHECKPOINT
    _write(path, state)
    logger.info("saved best checkpoint %s (update %d)", path, int(state["update"]))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint from :func:`save_checkpoint`; corrupt or incomplete files raise CheckpointError."""
    path = Path(path)
    try:
        state = load_torch_file(path, map_location)  # runs no code from the file: one from elsewhere is safe to read
    except FileNotFoundError:
        raise
    except UnsafeTorchFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    except Exception as exc:  # also a pickle of classes not installed here: another project's or numpy version's
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict (got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required entries {missing}")
    wrong = {k: type(state[k]).__name__ for k, kind in _ENTRY_TYPES.items() if not isinstance(state[k], kind)}
    if wrong or isinstance(state["update"], bool):
        raise CheckpointError(f"checkpoint {path} is not one of this project's: entries of the wrong type {wrong}")
    recorded = state.pop(WEIGHTS_DIGEST, None)  # None: written before checkpoints recorded it
    if recorded is not None and recorded != policy_digest(state):
        raise CheckpointError(f"checkpoint {path} is damaged: its weights no longer match the digest saved with them")
    recorded_entries = state.pop(STATE_DIGESTS, None)  # None: written before checkpoints recorded them
    if recorded_entries is not None and not isinstance(recorded_entries, dict):
        raise CheckpointError(f"checkpoint {path} is damaged: its {STATE_DIGESTS} entry is not a mapping")
    if recorded_entries is not None:
        current = entry_digests(state)  # linear: load_torch_file refused containers shared past walking
        damaged = sorted(
            k for k in recorded_entries.keys() | current.keys() if recorded_entries.get(k) != current.get(k)
        )
        if damaged:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its entries {damaged} no longer match the digests saved with them"
            )
    return state


def policy_digest(state: dict[str, Any]) -> str:
    """Digest of a checkpoint's policy weights (names, dtypes, shapes and values): what an evaluation of it
    depends on, whatever the file's path, and different for other weights of the same update."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state["model"].items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def entry_digests(state: dict[str, Any]) -> dict[str, str]:
    """A digest of each entry but the weights (which :func:`policy_digest` covers) and the digests."""
    skipped = ("model", WEIGHTS_DIGEST, STATE_DIGESTS)
    return {key: content_digest(value) for key, value in state.items() if key not in skipped}


def newest_checkpoint(run_dir: str | Path) -> Path:
    """The file :func:`load_latest` reads, to name in a message (the checkpoints directory when there is none)."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else checkpoint_dir(run_dir)


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint of ``run_dir`` (None when there is none); a corrupt newest file raises."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return None
    try:
        return load_checkpoint(checkpoints[-1], map_location)
    except CheckpointError as exc:
        if len(checkpoints) == 1:
            raise
        raise CheckpointError(
            f"{exc}; the run also has {checkpoints[-2].name}: move the broken file aside to resume from it"
        ) from exc


# keys a training run resolves before it starts (scenes.source=auto becomes embedded or soundspaces), with the
# value that checkpoints written before that held: they cannot say what it resolved to, so it is not compared
RESOLVED_WHEN_A_RUN_STARTS = {"scenes.source": "auto"}
# keys added to the schema with a default that changed what a run hears, with the value every checkpoint
# written before them was trained with: a checkpoint without the key is read as having that value
FORMER_VALUES_OF_ADDED_KEYS = {"task.keep_travel_time": True, "acoustics.source_spread": "farthest"}
# keys that change nothing in a run on SoundSpaces data: it hears the stored responses as they are, sees the stored
# views at their size and loads every scene of a split (runs of earlier releases recorded image_size and num_scenes
# without their being applied there: a resume may now set them right)
EMBEDDED_SCENES_ONLY_KEYS = frozenset({"task.keep_travel_time", "scenes.image_size", "scenes.num_scenes"})


# path keys a run records as absolute paths (experiment.resolve_data_paths); runs of earlier releases recorded
# them as typed, so a relative value is compared as the same path seen from this directory
RECORDED_ABSOLUTE_KEYS = (
    "scenes.data_root",
    "scenes.soundspaces_root",
    "task.spectrogram_store",
    "task.doa_checkpoint",
)


def is_path_value(value: Any) -> bool:
    """A path: not None (SoundSpaces data under the data root) nor "" (the packaged DoA head; the spectrogram
    store off) nor "auto" (the store beside the scenes)."""
    return isinstance(value, str) and value not in ("", "auto")


def _differs(key: str, old: Any, new: Any) -> bool:
    if key in RECORDED_ABSOLUTE_KEYS and is_path_value(old) and is_path_value(new):
        return Path(old).expanduser().absolute() != Path(new).expanduser().absolute()
    return old != new


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each key outside :data:`RESUMABLE_KEYS` that differs.

    A key only one side has (added to or dropped from the schema since the checkpoint was written) is not
    compared: the checkpoint cannot say what it was, unless :data:`FORMER_VALUES_OF_ADDED_KEYS` does."""
    old, new = {**FORMER_VALUES_OF_ADDED_KEYS, **flatten_dotted(saved)}, flatten_dotted(current)
    unresolved = [k for k, value in RESOLVED_WHEN_A_RUN_STARTS.items() if old.get(k) == value]
    if new.get("scenes.source") == "soundspaces" and old.get("scenes.source") in ("soundspaces", "auto"):
        unresolved += EMBEDDED_SCENES_ONLY_KEYS
    return [
        (k, old[k], new[k])
        for k in sorted(old.keys() & new.keys())
        if k not in RESUMABLE_KEYS and k not in unresolved and _differs(k, old[k], new[k])
    ]


def resumable_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each key of :data:`RESUMABLE_KEYS` a resume changes: allowed,
    but said, since a resume with the packaged config instead of the run's own changes them unasked (another
    ``scenes.data_root`` bakes every scene again)."""
    old, new = flatten_dotted(saved), flatten_dotted(current)
    return [
        (k, old[k], new[k]) for k in sorted(RESUMABLE_KEYS & old.keys() & new.keys()) if _differs(k, old[k], new[k])
    ]


def check_same_doa_head(saved: dict[str, str] | None, current: dict[str, str] | None, run_dir: str | Path) -> None:
    """Refuse to continue a run whose DoA head file now holds other weights than it was trained with (the
    config names the head by path only); checkpoints that recorded no head are not compared."""
    if not saved or not current or saved.get("sha256") == current.get("sha256"):
        return
    raise CheckpointError(
        f"checkpoint in {run_dir} was trained with the DoA head {saved.get('path')} of digest {saved.get('sha256')}, "
        f"but {current['path']} now holds digest {current['sha256']} (pretraining continued at that path, or another "
        "release of the packaged head); put the head it was trained with back, or point task.doa_checkpoint at a "
        "copy of it"
    )


def check_resume_config(state: dict[str, Any], config: dict[str, Any], run_dir: str | Path) -> None:
    """Raise CheckpointError, naming each key with its old and new value, when ``config`` (the resumed run's,
    as a dict) would continue ``state`` (a checkpoint of ``run_dir``) as another experiment."""
    same_run = f"resume with the run's own config: {shell_command('--config', Path(run_dir) / 'config.yaml')} --resume"
    policy = config["model"]["policy"]
    if state.get("policy_name", policy) != policy:
        raise CheckpointError(
            f"checkpoint in {run_dir} was trained with policy {state['policy_name']!r}, config asks for "
            f"{policy!r}; {same_run}"
        )
    changes = config_changes(state["config"], config)
    if changes:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
        added = [
            f"{key}={str(old).lower()}"
            for key, old, _ in changes
            if key in FORMER_VALUES_OF_ADDED_KEYS and key not in flatten_dotted(state["config"])
        ]
        if added:  # the run's own config.yaml predates the key too
            same_run += f" {' '.join(added)} (the checkpoint predates {'these keys' if len(added) > 1 else 'the key'})"
        raise CheckpointError(
            f"checkpoint in {run_dir} was trained with another config ({listed}); a resumed run may change only "
            "ppo.total_frames and how it runs (train.device, train.torch_threads, paths, caches, log / validation "
            f"/ checkpoint intervals, scenes.rir_on_missing); {same_run}"
        )


def response_versions(cfg: Any) -> dict[str, int | None]:
    """The acoustics and render versions of the responses a run on ``cfg`` hears, as checkpoints record them:
    this code's for the embedded scenes, None for SoundSpaces data (its responses come with it, unversioned)."""
    embedded = scene_source(cfg) == "embedded"
    return {
        "acoustics_version": ACOUSTICS_VERSION if embedded else None,
        "render_version": RENDER_VERSION if embedded else None,
    }


def describe_versions(versions: dict[str, Any]) -> str:
    """``acoustics version 3, render version 4`` (``not recorded`` for a missing one)."""
    return ", ".join(
        f"{key.replace('_', ' ')} {'not recorded' if versions.get(key) is None else versions[key]}"
        for key in RESPONSE_VERSION_KEYS
    )


def response_version_changes(state: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]] | None:
    """``(key, trained, now)`` for each response version ``state`` was trained at that differs from
    ``current`` (:func:`response_versions`); None when the checkpoint predates recording them (it cannot tell)."""
    if not any(key in state for key in RESPONSE_VERSION_KEYS):
        return None
    return [(key, state.get(key), current.get(key)) for key in RESPONSE_VERSION_KEYS if state.get(key) != current[key]]


def warn_if_trained_at_other_versions(
    subject: str, state: dict[str, Any], heard: dict[str, Any], consequence: str, log: logging.Logger = logger
) -> None:
    """Warn on ``log`` when ``subject`` (a checkpoint or a baseline audio model, named with its file), whose saved
    ``state`` records the response versions it learnt from, plays embedded scenes whose responses are of other
    versions (``heard``: the code was updated since), or when it cannot tell (a file of an earlier release):
    its figures are then not those it gave, which ``consequence`` says in the caller's words. Nothing where
    ``heard`` has no versions or ``state`` recorded None for each (SoundSpaces data, unversioned)."""
    if heard.get("acoustics_version") is None:
        return
    if all(key in state and state[key] is None for key in RESPONSE_VERSION_KEYS):
        return  # trained on SoundSpaces data: the caller warns of the other data set, if it does
    changes = response_version_changes(state, heard)
    if changes is None:
        log.warning(
            "%s was written by an earlier release that did not record the acoustics and render versions it was "
            "trained on; it is evaluated on responses of %s, which may not be those it learnt from: %s",
            subject,
            describe_versions(heard),
            consequence,
        )
    elif changes:
        log.warning(
            "%s was trained on responses of %s and is evaluated on responses of %s (%s: the scenes' acoustics are "
            "baked or rendered otherwise since); %s",
            subject,
            describe_versions({key: state.get(key) for key in RESPONSE_VERSION_KEYS}),
            describe_versions(heard),
            ", ".join(f"{VERSION_CONSTANTS[key]} {old} -> {new}" for key, old, new in changes),
            consequence,
        )


def check_same_responses(state: dict[str, Any], current: dict[str, Any], run_dir: str | Path) -> None:
    """Refuse to continue a run on responses made at other acoustics or render versions than it trained on
    (the code was updated since): the rest of the run would learn from other sound than its first part did.
    Checked before a resumed run bakes anything, as the scenes of a new acoustics version are baked again in
    place. A checkpoint that recorded no versions is not compared (the caller says it cannot tell)."""
    changes = response_version_changes(state, current)
    if not changes:
        return
    where = newest_checkpoint(run_dir)
    trained = {key: state.get(key) for key in RESPONSE_VERSION_KEYS}
    changed = ", ".join(f"{VERSION_CONSTANTS[key]} {old} -> {new}" for key, old, new in changes)
    raise CheckpointError(
        f"checkpoint {where} was trained on responses of {describe_versions(trained)}, and this code makes "
        f"{describe_versions(current)} ({changed}: the scenes' acoustics are baked or rendered otherwise since); "
        "continuing would train the rest of the run on other sound than its start, so it is not resumed. Start a "
        "new run in another train.run_dir (the trainer has no option to start from a checkpoint's weights); "
        "this run's checkpoints can still be evaluated, with a warning"
    )
