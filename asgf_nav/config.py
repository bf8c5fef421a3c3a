"""Typed experiment configuration: dataclasses filled from YAML files and ``key.sub=value`` overrides.

Every field has a documented default; a YAML file in ``asgf_nav/configs/`` sets what its experiment needs
(restating a default where it is part of the protocol). Unknown keys, wrongly typed values and values out of
range fail early with a :class:`ConfigError` that names the key (and, for unknown keys, lists the valid ones).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from asgf_nav.errors import UserInputError
from asgf_nav.scenes.presets import get_preset

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped inside the package, so a wheel has them


class ConfigError(UserInputError, ValueError):
    """A configuration file or override is invalid; the message names the offending key."""


# --------------------------------------------------------------------------------------------- schema
@dataclass
class ScenesConfig:
    """Which scene set to use and how its embedded stand-in is baked."""

    dataset: Literal["replica", "mp3d", "tiny"] = "replica"  # tiny: three small scenes for tests and demos
    data_root: str = "data"  # baked scenes live in {data_root}/scenes/{dataset}/{scene}
    source: Literal["auto", "embedded", "soundspaces"] = "auto"  # auto: SoundSpaces data when found, else embedded
    soundspaces_root: str | None = None  # None: {data_root}/soundspaces (layout in docs/data.md)
    rir_cache_mb: int = 256  # bound on SoundSpaces RIRs cached per loaded split (training: train + val)
    rir_on_missing: Literal["error", "silence"] = "error"  # "silence": warn, count and report instead of failing
    num_scenes: int | None = None  # None: the preset's full count (replica 18, mp3d 85)
    image_size: int = 128  # RGB-D views are image_size x image_size (SoundSpaces: 128)
    # parallel scene builds of build_scenes.py and of a training run's own bake (layouts, first scene; the
    # background bake of the rest runs on one core); 0 = the CPU cores this process may use (its affinity mask)
    workers: int = 0


@dataclass
class AcousticsConfig:
    """Room-acoustics baking (image sources + ray tracing, binaural with a measured HRTF) of the embedded scenes;
    SoundSpaces data brings its own RIRs."""

    sources_per_scene: int = 24  # nodes that can hold the sound, spread over the scene; RIRs from each to every node
    # how they are spread: "farthest" (farthest-point sampling, as the shipped figures were measured; it favours
    # nodes near walls) or "stratified" (one node picked from each of sources_per_scene equal-area regions)
    source_spread: Literal["farthest", "stratified"] = "farthest"
    ism_order: int = 3  # image-source reflection order of the early part (0: the direct sound only)
    rays: int = 3000  # rays traced per source for the late reverberation (a baked scene needs its tail: >= 1)
    max_rir_seconds: float = 1.0  # impulse-response length (the reverberation beyond is cut); below 4 s
    ear_height: float = 1.5  # listener and source height above the floor (m); lowered to 0.3 m below a lower ceiling
    furniture_obstacles: bool = True  # furniture as absorbing boxes in the acoustic model
    max_image_sources: int = 30000  # walls**order cap: lowers the image-source order on large plans, never below 1


@dataclass
class TaskConfig:
    """AudioGoal task semantics (SoundSpaces 1.0 defaults)."""

    sound_split: Literal["heard", "unheard"] = "unheard"  # heard: the telephone; unheard: sounds disjoint per split
    # any of "rgb", "depth", "spectrogram" the policy reads; "pointgoal" too, for a plugin policy that reads it
    # (no built-in one does); "doa" needs task.use_doa=true, which registers the DoA head's observation and
    # appends "doa" here itself (experiment.register_auxiliary_observations)
    sensors: list[str] = field(default_factory=lambda: ["rgb", "depth", "spectrogram"])
    max_steps: int = 500  # actions before an episode ends unsuccessfully
    success_distance: float = 1.0  # success: STOP with the geodesic distance to the goal below this (m)
    slack_reward: float = -0.01  # every step
    success_reward: float = 10.0  # STOP on the goal node itself (stricter than success within 1 m)
    distance_reward_scale: float = 1.0  # times the decrease of the geodesic distance to the goal (m) per step
    # embedded scenes' responses start at the straight-line arrival, as SoundSpaces' stored ones have no
    # time-of-flight padding (false), or at the emission (true: leading silence that tells the distance)
    keep_travel_time: bool = False
    # episodes generated per training scene (embedded scenes; SoundSpaces data plays its own episode files)
    train_episodes_per_scene: int = 5000
    val_episodes: int = 500  # episodes generated for the val split (train.val_episodes: run per validation)
    test_episodes: int = 1000  # episodes generated for the test split, over its scenes
    min_geodesic_distance: float = 1.0  # least start-to-goal geodesic distance of a generated episode (m)
    max_geodesic_distance: float = 1000.0  # largest start-to-goal geodesic distance (m; 1000: no upper bound)
    use_doa: bool = False  # add the frozen selective DoA head's posterior as a "doa" observation
    doa_checkpoint: str = ""  # empty: the packaged weights (asgf_nav/models/doa/weights/selective_doa.pt)
    doa_cache_size: int = 65536  # DoA posteriors kept per split (LRU by scene, node, goal, yaw, sound); 0 = none
    # spectrograms kept by the batched env (LRU; ~36 kB each at 44.1 kHz); at least ppo.num_envs (0 = that many)
    spectrogram_cache_size: int = 8192
    # baked spectrograms (scripts/bake_spectrograms.py) the batched env reads its misses from:
    # "auto" = {data root}/spectrograms ({soundspaces root}/spectrograms on SoundSpaces data), used for the
    # (scene, sound) pairs baked there; "" = never; or a path
    spectrogram_store: str = "auto"


@dataclass
class ModelConfig:
    """Policy architecture; ``policy`` is a name in the policy registry."""

    policy: str = "asgf"  # a name in POLICY_REGISTRY: asgf | asgf_no_ase | asgf_no_asgf | av_nav built in
    hidden_size: int = 512  # GRU state size (the actor and critic read it)
    fusion_dim: int = 256  # D in the ASGF equations
    fusion_heads: int = 4  # attention heads of the ASGF cross-attention (fusion_dim must divide by it)
    ase_dim: int = 512  # BiGRU frame-embedding size (256 per direction)
    # modules of your own imported first, whose @register_policy / register_observation calls add the names
    # model.policy and task.sensors then use (e.g. [my_lab.policies]); saved with the run, so evaluating its
    # checkpoints imports them too (docs/models.md, New policies)
    plugins: list[str] = field(default_factory=list)


@dataclass
class PPOConfig:
    """PPO hyper-parameters; defaults are SoundSpaces' AV-Nav settings."""

    num_envs: int = 5  # episodes stepped in parallel (per DD-PPO rank)
    num_steps: int = 150  # rollout length per env: an update learns from num_envs x num_steps (x ranks) frames
    ppo_epoch: int = 4  # passes over each rollout
    num_mini_batch: int = 1  # minibatches per pass, each a subset of whole env sequences (<= num_envs)
    clip_param: float = 0.1  # PPO ratio clip, also the value clip (both decay with use_linear_clip_decay)
    value_loss_coef: float = 0.5  # weight of the value loss
    entropy_coef: float = 0.2  # weight of the entropy bonus
    lr: float = 2.5e-4  # Adam learning rate
    eps: float = 1e-5  # Adam epsilon
    max_grad_norm: float = 0.5  # gradient-norm clip
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    use_linear_lr_decay: bool = True  # lr falls linearly towards 0 over ppo.total_frames
    use_linear_clip_decay: bool = True  # clip_param falls linearly towards 0 over ppo.total_frames
    use_clipped_value_loss: bool = True  # PPO's clipped value loss
    use_normalized_advantage: bool = True  # advantages normalised over the rollout (DD-PPO: every rank's)
    total_frames: int = 30_000_000  # training length in environment steps, all envs and ranks together


@dataclass
class TrainConfig:
    """Run bookkeeping: where outputs go, how often to log, validate and checkpoint."""

    run_dir: str = "runs/default"  # checkpoints, config.yaml, train.log and TensorBoard events; one run each
    seed: int = 1  # of python, numpy and torch (plus the rank under DD-PPO); below 2**32
    device: str = "auto"  # auto: cuda when available
    log_interval: int = 1  # updates between train/* log lines and scalars (val/* always; 0: every update, as 1)
    checkpoint_interval: int = 50  # updates between checkpoints
    keep_checkpoints: int = 3  # newest ckpt_*.pt kept (best.pt is kept besides); 0: all
    val_interval: int = 500  # updates between validations; 0 disables
    val_episodes: int = 50  # run per validation, spaced evenly over the task.val_episodes of the val split
    # the validation metric that picks checkpoints/best.pt (SoundSpaces tests the checkpoint with the
    # best val SPL); "none": keep no best checkpoint
    best_metric: Literal["spl", "success", "sna", "softspl", "none"] = "spl"
    stats_window_episodes: int = 50  # finished episodes behind the logged return / SR / SPL / SNA (per DD-PPO rank)
    # training and evaluation; 0: the cores per rank (less one while scenes bake in the background), at most
    # OMP_NUM_THREADS
    torch_threads: int = 0


@dataclass
class ExperimentConfig:
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    acoustics: AcousticsConfig = field(default_factory=AcousticsConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------- loading
def resolve_config_path(name: str | Path) -> Path:
    """A path to an existing file, or a bare name (with or without .yaml) looked up in ``asgf_nav/configs/``.

    Only a bare name falls back to the packaged configs: ``exp/replica_heard.yaml`` that does not exist is an
    error, not silently the packaged file of the same name.
    """
    path = Path(name)
    if path.is_file():
        return path
    if str(name) != path.name:  # a directory part: the user means that very file
        problem = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"config file {str(name)!r} {problem}")
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name)!r} not found as a file or in {CONFIG_DIR}; available: {available}")


class _WrittenInt(int):
    """An integer from a config file that keeps the text it was written as, for a text field to take as typed."""

    text: str


class _WrittenFloat(float):
    text: str


def _has_leading_zero(text: str) -> bool:
    """Digits (``_`` and a sign allowed) with a leading zero, such as ``0755``: YAML 1.1 reads it as octal."""
    digits = text.replace("_", "").lstrip("+-")
    return digits.isdigit() and digits != "0" and digits.startswith("0")


class _ConfigFileLoader(yaml.SafeLoader):
    """YAML for config files: a key given twice in one mapping is an error (YAML keeps the last one silently, so
    a second ``ppo:`` section would reset the first one's keys), and a number keeps its text, which a text field
    such as ``train.run_dir`` takes as typed, as an override does (``2.10``, ``1_000``). Only plain decimal
    integers are integers: YAML 1.1 reads ``0755`` as 493, ``0x1F`` as 31 and ``12:30`` as 750; these stay text,
    and so does a date."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # << merges: explicit keys override them by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, typing.Hashable):  # a list as a key: PyYAML's own check below names it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | str:
        digits = node.value.replace("_", "").lstrip("+-")
        if not digits.isdigit() or _has_leading_zero(node.value):
            return node.value
        number = _WrittenInt(super().construct_yaml_int(node))
        number.text = node.value
        return number

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        number = _WrittenFloat(super().construct_yaml_float(node))
        number.text = node.value
        return number


_ConfigFileLoader.add_constructor("tag:yaml.org,2002:int", _ConfigFileLoader.construct_yaml_int)
_ConfigFileLoader.add_constructor("tag:yaml.org,2002:float", _ConfigFileLoader.construct_yaml_float)
# a date (``run_dir: 2024-06-01``) is text, as on the command line: no config key holds a date
_ConfigFileLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: node.value)


def load_config(
    name: str | Path | None = None, overrides: list[str] | None = None, options: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Defaults, then the YAML file ``name`` (if given), then ``key.sub=value`` overrides, then the values of a
    script's own options by dotted key (``--data-root`` as ``{"scenes.data_root": ...}``), all checked together."""
    if isinstance(overrides, str):  # "ppo.lr=1e-4" would be read one character at a time
        raise TypeError(f"overrides must be a list of 'key.sub=value' strings, not the string {overrides!r}")
    cfg = ExperimentConfig()
    if name is not None:
        path = resolve_config_path(name)
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigFileLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        if data is None:  # e.g. cut to zero bytes by a copy: the defaults would bake and train another experiment
            raise ConfigError(f"config file {path} holds no settings (it is empty or all comments); write {{}} "
                              "in it for the defaults")  # fmt: skip
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _merge(cfg, data, prefix="", source=str(path))
    for item in overrides or []:  # applied in turn: of a key given twice, the later value holds
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        try:
            value = _parse_override(raw, _field_hint(key.strip()))
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"override {item!r}: the value {raw!r} is not valid YAML ({problem})") from None
        _set_dotted(cfg, key.strip(), value, source="command line")
    for key, value in (options or {}).items():
        _set_dotted(cfg, key, _plain(value), source="command-line options")
    for section, key in (dotted.split(".") for dotted in PATH_KEYS):  # "~" the shell left, as in train.run_dir=~/x
        path = getattr(getattr(cfg, section), key)
        if isinstance(path, str) and path.startswith("~"):
            setattr(getattr(cfg, section), key, os.path.expanduser(path))
    check_values(cfg)
    return cfg


def is_whole_number(value: Any) -> bool:
    """An int read from JSON, YAML or a pickle, and not a bool (which Python counts as an int: true is no 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """A value handed in from Python as the YAML of a config would give it: numpy numbers, strings and arrays
    (a sweep's ``np.int64(4)``) as Python ones, tuples as lists."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


REGISTERED_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_registered_name(kind: str, name: Any, key: str) -> None:
    """Refuse a registry name a config could not tell apart: ``AV_NAV`` or ``' av_nav'`` beside ``av_nav`` (an
    override's stray space would pick another class), an empty one, or a non-string (``@register_policy``
    written without its name). ``key`` is the config key the name is typed in."""
    if not isinstance(name, str):
        usage = ": write @register_policy('my_policy') above the class, with its name" if kind == "policy" else ""
        raise TypeError(f"a {kind} is registered under a name (a string), got {name!r}{usage}")
    if not REGISTERED_NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r}: use lower-case letters, digits and underscores, starting with a letter (it is "
            f"what {key} names)"
        )


def import_plugins(names: Sequence[str]) -> None:
    """Import the modules named in ``model.plugins``: their ``@register_policy`` and ``register_observation``
    calls add the names the config uses. Importing a module again is a no-op; the envs and the trainer's
    entry call this, so a config of a run with plugins works from library code too."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name and not name.startswith(f"{exc.name}."):  # the plugin imports something missing
                raise ConfigError(f"model.plugins: importing {name!r} failed: {exc}") from exc
            raise ConfigError(
                f"model.plugins: no module {name!r} (install it, or add the folder holding it to PYTHONPATH)"
            ) from exc
        except Exception as exc:  # a bug in the plugin, or a name it registers twice
            raise ConfigError(f"model.plugins: importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


NULL_SPELLINGS = ("null", "Null", "NULL", "~")  # YAML's: None for an optional text field, refused for another
# text keys that name files or directories: a leading "~" is the home directory, wherever the value came from
PATH_KEYS = (
    "scenes.data_root",
    "scenes.soundspaces_root",
    "task.doa_checkpoint",
    "task.spectrogram_store",
    "train.run_dir",
)


def _field_hint(dotted: str) -> Any | None:
    """The annotation of the leaf field ``dotted`` (``train.run_dir``), or None for a section or an unknown key."""
    obj: Any = ExperimentConfig
    hint: Any = None
    for part in dotted.split("."):
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
            return None
        hint = get_type_hints(obj).get(part)
        if hint is None:
            return None
        obj = hint
    return None if dataclasses.is_dataclass(hint) else hint


def _is_text(hint: Any) -> bool:
    """``str`` or a Literal of strings: a value whose text is the value itself."""
    if hint is str:
        return True
    return get_origin(hint) is Literal and all(isinstance(arg, str) for arg in get_args(hint))


def _parse_override(raw: str, hint: Any | None) -> Any:
    """The value of an override, read by the type of its field.

    Text fields keep the text as typed, except YAML's null spellings (None, as in a file): YAML 1.1 would turn
    ``0755`` into 493, ``1:30`` into 90, ``2024_06_01`` into 20240601 and ``2024-06-01`` into a date. Lists of
    text read each item as text (YAML's base loader); everything else (numbers, bools, sections given as
    mappings) is parsed as YAML the way a config file is, so ``0755`` in a number field is refused on the
    command line as in a file, not read as 493.
    """
    if not raw.strip():
        return ""
    text, optional = raw.strip(), False
    if hint is not None and (get_origin(hint) in (Union, types.UnionType)):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        optional = type(None) in get_args(hint) and all(_is_text(arg) for arg in members)
    if optional or (hint is not None and _is_text(hint)):
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            try:  # quoted as YAML (make ARGS keeps the quotes): the quoted text
                node = yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                node = None
            whole = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') and node.end_mark.index == len(text)
            # else not one quoted scalar ('"Final" vs "Draft"', or '"a" #2' whose rest YAML reads as a comment)
            return node.value if whole else raw  # a quoted scalar's value: its text, escapes read
        return None if text in NULL_SPELLINGS else raw  # refused where the field takes no null, as in a file
    if hint is not None and get_origin(hint) is list and all(_is_text(arg) for arg in get_args(hint)):
        return yaml.load(raw, Loader=yaml.BaseLoader)
    return yaml.load(raw, Loader=_ConfigFileLoader)


# keys whose value must be > 0, >= 0 or in [0, 1]; anything else would fail later, deep inside a run
POSITIVE = (
    "scenes.image_size", "scenes.rir_cache_mb", "scenes.num_scenes",
    "acoustics.sources_per_scene", "acoustics.rays", "acoustics.max_rir_seconds", "acoustics.ear_height",
    "acoustics.max_image_sources",
    "task.max_steps", "task.success_distance", "task.train_episodes_per_scene", "task.val_episodes",
    "task.test_episodes",
    "model.hidden_size", "model.fusion_dim", "model.fusion_heads", "model.ase_dim",
    "ppo.num_envs", "ppo.num_steps", "ppo.ppo_epoch", "ppo.num_mini_batch", "ppo.clip_param", "ppo.lr",
    "ppo.eps", "ppo.max_grad_norm", "ppo.total_frames",
    "train.checkpoint_interval", "train.val_episodes", "train.stats_window_episodes",
)  # fmt: skip
NON_NEGATIVE = (
    "scenes.workers", "acoustics.ism_order", "task.min_geodesic_distance", "task.doa_cache_size",
    "task.spectrogram_cache_size", "ppo.value_loss_coef", "ppo.entropy_coef", "train.log_interval",
    "train.keep_checkpoints", "train.val_interval", "train.torch_threads", "train.seed",
)  # fmt: skip
UNIT_INTERVAL = ("ppo.gamma", "ppo.gae_lambda")
LATE_NOISE_SECONDS = 4.0  # acoustics.binaural.NOISE_SECONDS (tested equal): responses must be shorter


def check_values(cfg: ExperimentConfig) -> None:
    """Ranges and relations between values, checked once a config is loaded; a :class:`ConfigError` names the key."""

    def value(dotted: str) -> Any:
        section, key = dotted.split(".")
        return getattr(getattr(cfg, section), key)

    for key in POSITIVE:
        if value(key) is not None and not value(key) > 0:
            raise ConfigError(f"config key {key!r} must be positive, got {_shown(value(key))}")
    for key in NON_NEGATIVE:
        if not value(key) >= 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {_shown(value(key))}")
    for key in UNIT_INTERVAL:
        if not 0 <= value(key) <= 1:
            raise ConfigError(f"config key {key!r} must be in [0, 1], got {_shown(value(key))}")
    for key in ("scenes.data_root", "train.run_dir"):  # an empty path is the working directory, never meant
        if not str(value(key)).strip():
            raise ConfigError(f"config key {key!r} must name a directory, got {_shown(value(key))}")
    if cfg.scenes.num_scenes is not None:
        try:
            get_preset(cfg.scenes.dataset).split_counts(cfg.scenes.num_scenes)
        except ValueError as exc:
            raise ConfigError(f"config key 'scenes.num_scenes': {exc}") from None
    if cfg.train.seed >= 2**32:  # runs seed with offsets (rank, update) that torch's 64-bit seeds must still hold
        raise ConfigError(f"config key 'train.seed' must be below 2**32, got {_shown(cfg.train.seed)}")
    if cfg.acoustics.max_rir_seconds >= LATE_NOISE_SECONDS:
        raise ConfigError(
            f"config key 'acoustics.max_rir_seconds' must be below {LATE_NOISE_SECONDS} s, the noise bank the "
            f"late tails are cut from, got {_shown(cfg.acoustics.max_rir_seconds)}"
        )
    if cfg.ppo.num_mini_batch > cfg.ppo.num_envs:
        raise ConfigError(
            f"config key 'ppo.num_mini_batch' ({cfg.ppo.num_mini_batch}) must be at most ppo.num_envs "
            f"({cfg.ppo.num_envs}): each minibatch holds whole env trajectories"
        )
    if cfg.ppo.num_envs * cfg.ppo.num_steps < 2:
        raise ConfigError(
            f"config keys 'ppo.num_envs' ({cfg.ppo.num_envs}) and 'ppo.num_steps' ({cfg.ppo.num_steps}) give a "
            "rollout of one transition: PPO normalises advantages over the rollout and needs num_envs x "
            "num_steps >= 2"
        )
    if cfg.model.fusion_dim % cfg.model.fusion_heads:
        raise ConfigError(
            f"config key 'model.fusion_dim' ({cfg.model.fusion_dim}) must be a multiple of model.fusion_heads "
            f"({cfg.model.fusion_heads})"
        )
    if cfg.model.ase_dim % 2:
        raise ConfigError(f"config key 'model.ase_dim' must be even (two GRU directions), got {cfg.model.ase_dim}")
    # ASGF normalises both with a LayerNorm: over one feature it outputs its bias whatever the input, over two
    # only the sign of their difference
    for key, least in (("fusion_dim", 2), ("ase_dim", 4)):
        if getattr(cfg.model, key) < least:
            raise ConfigError(
                f"config key 'model.{key}' ({getattr(cfg.model, key)}) must be at least {least}: the ASGF fusion "
                "layer-normalises it, which leaves nothing of the input in fewer features"
            )
    if cfg.task.min_geodesic_distance > cfg.task.max_geodesic_distance:
        raise ConfigError(
            f"config key 'task.min_geodesic_distance' ({cfg.task.min_geodesic_distance}) is above "
            f"task.max_geodesic_distance ({cfg.task.max_geodesic_distance})"
        )


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def field_comments(cls: type) -> dict[str, str]:
    """What each field of dataclass ``cls`` is, read from its class source so that the documentation lives in
    one place: the comment after the field's declaration (on its last line), else the comment lines right above
    it (no blank line between). Only the class body's own declarations count, not a method's lines."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    source = textwrap.dedent(inspect.getsource(cls))
    names = {f.name for f in dataclasses.fields(cls)}
    comment_on: dict[int, str] = {}  # line -> its comment's text
    code_lines: set[int] = set()  # lines holding code
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comment_on[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    (class_def,) = ast.parse(source).body
    comments: dict[str, str] = {}
    for node in class_def.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in names):
            continue
        text = comment_on.get(node.end_lineno or node.lineno, "")
        line, above = node.lineno - 1, []
        while not text and line in comment_on and line not in code_lines:  # a block of comment lines
            above.insert(0, comment_on[line])
            line -= 1
        text = text or " ".join(t for t in above if t)
        if text:
            comments[node.target.id] = text
    return comments


def describe_config(cfg: ExperimentConfig) -> str:
    """Every key of ``cfg`` as YAML, each with what it sets and, where ``cfg`` changed it, its default: what
    ``train_ppo.py --print-config`` shows, and a file ``--config`` reads back."""
    default = ExperimentConfig()
    lines = []
    for section in dataclasses.fields(cfg):
        values, defaults = getattr(cfg, section.name), getattr(default, section.name)
        comments, hints = field_comments(type(values)), get_type_hints(type(values))
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            text = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False, width=10**6)
            note = comments.get(f.name, "")
            if get_origin(hints[f.name]) is Literal:
                note = f"{' | '.join(map(str, get_args(hints[f.name])))}; {note}".rstrip("; ")
            if value != getattr(defaults, f.name):
                note = f"{note} (default: {getattr(defaults, f.name)!r})".strip()
            lines.append(f"  {text.strip()[1:-1]}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def flatten_dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (``{"ppo": {"lr": 1}}`` -> ``{"ppo.lr": 1}``), so that
    two configs or fingerprints can be compared key by key; a value that is not a mapping is ``{prefix: value}``."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten_dotted(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    from asgf_nav.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _merge(obj: Any, data: dict[str, Any], prefix: str, source: str) -> None:
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in _field_names(obj):
            elsewhere = _sections_with(key) or [
                f"{prefix}{near}" for near in difflib.get_close_matches(str(key), _field_names(obj), n=2)
            ]
            hint = f" (did you mean {' or '.join(elsewhere)}?)" if elsewhere else ""
            raise ConfigError(
                f"unknown config key {full!r} (in {source}){hint}; valid keys here: {_valid_keys(obj, prefix)}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"config key {full!r} (in {source}) is a section; give a mapping with keys "
                    f"{_valid_keys(current, full + '.')}"
                )
            _merge(current, value, prefix=f"{full}.", source=source)
        else:
            hint = get_type_hints(type(obj))[key]
            if isinstance(value, dict) and get_origin(hint) is not dict:  # ppo.lr.x=1
                raise ConfigError(
                    f"config key {full!r} (in {source}) is a setting, not a section: it has no key "
                    f"{_shown(next(iter(value)))}"
                )
            setattr(obj, key, _coerce(value, hint, full, source))


def _sections_with(key: str) -> list[str]:
    """``section.key`` for each config section that has ``key`` (a key given under the wrong section)."""
    return [f"{f.name}.{key}" for f in dataclasses.fields(ExperimentConfig) if key in _field_names(f.default_factory())]


def _set_dotted(cfg: ExperimentConfig, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    _merge(cfg, nested, prefix="", source=source)


def _valid_keys(obj: Any, prefix: str) -> list[str]:
    return [f"{prefix}{n}" for n in _field_names(obj)]


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxlevel, _VALUE_REPR.maxlist, _VALUE_REPR.maxdict = 3, 6, 6
_VALUE_REPR.maxstring = _VALUE_REPR.maxother = _VALUE_REPR.maxlong = 160
SHOWN_VALUE_CHARS = 200  # of a value a ConfigError quotes


def _shown(value: Any) -> str:
    """``repr(value)`` cut to at most ``SHOWN_VALUE_CHARS``: YAML aliases nest a few hundred bytes of a config into
    a value whose full repr runs to hundreds of megabytes, and an error message would build all of it."""
    text = _VALUE_REPR.repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``hint``; allow lossless int->float and str->number."""
    origin = get_origin(hint)
    args = get_args(hint)

    def fail() -> typing.NoReturn:
        kind = {_WrittenInt: "int", _WrittenFloat: "float"}.get(type(value), type(value).__name__)
        quote = ""
        if value is None and _is_text(hint):  # typed as null, ~ or None
            typed = f"{key.split('.')[-1]}: 'null'" if source != "command line" else f"'{key}=\"null\"' in a shell"
            quote = f"; quote it for the text, as YAML does ({typed})"
            quote += "; a folder named ~ is ./~ (a quoted ~ is still the home directory)" if key in PATH_KEYS else ""
        raise ConfigError(
            f"config key {key!r} (in {source}) expects {_type_name(hint)}, got {_shown(value)} ({kind}){quote}"
        )

    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or value == "None"):  # Python's spelling of YAML's null too
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        fail()
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r} (in {source}) must be one of {list(args)}, got {_shown(value)}")
    if origin is list:
        if not isinstance(value, list):
            fail()
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)] if args else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        fail()
    if hint is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            if _has_leading_zero(value):  # 0755: YAML 1.1's octal 493, or 755?
                raise ConfigError(
                    f"config key {key!r} (in {source}) expects a decimal int, got {_shown(value)}: a leading zero is "
                    "octal in YAML 1.1, so write the number without it"
                )
            try:
                return int(float(value)) if float(value).is_integer() else fail()
            except ValueError:
                fail()
        fail()
    if hint is float:
        if isinstance(value, bool):
            fail()
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                number = float(value)
            except ValueError:
                fail()
        if not isinstance(number, (int, float)):
            fail()
        if not math.isfinite(number):  # nan passes every range check and inf every upper bound
            raise ConfigError(f"config key {key!r} (in {source}) must be a finite number, got {_shown(value)}")
        return float(number)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return getattr(value, "text", str(value))  # as written in a config file, not as Python prints it
        fail()
    return value
