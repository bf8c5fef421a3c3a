"""Config loading, overrides and the error kinds (unknown key, wrong type, value out of range)."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asgf_nav.config import CONFIG_DIR, ConfigError, ExperimentConfig, load_config, save_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_soundspaces_av_nav_ppo():
    cfg = ExperimentConfig()
    assert (cfg.ppo.num_steps, cfg.ppo.ppo_epoch, cfg.ppo.clip_param, cfg.ppo.entropy_coef) == (150, 4, 0.1, 0.2)
    assert cfg.ppo.lr == pytest.approx(2.5e-4)
    assert (cfg.ppo.gamma, cfg.ppo.gae_lambda) == (0.99, 0.95)
    assert cfg.task.max_steps == 500 and cfg.task.success_distance == 1.0
    p = cfg.ppo
    assert (p.num_envs, p.num_mini_batch, p.value_loss_coef, p.max_grad_norm, p.eps) == (5, 1, 0.5, 0.5, 1e-5)
    assert p.use_linear_lr_decay and p.use_linear_clip_decay and p.use_clipped_value_loss
    assert p.use_normalized_advantage and p.total_frames == 30_000_000
    t = cfg.task
    assert (t.val_episodes, t.test_episodes) == (500, 1000)  # SoundSpaces evaluates on 500 val / 1000 test
    assert (t.slack_reward, t.success_reward, t.distance_reward_scale) == (-0.01, 10.0, 1.0)
    assert cfg.scenes.image_size == 128


@pytest.mark.parametrize("name", ["replica_heard", "replica_unheard.yaml", "mp3d_heard", "mp3d_unheard.yaml"])
def test_bundled_configs_load_by_bare_name(name):
    cfg = load_config(name)
    dataset, split = name.removesuffix(".yaml").split("_")
    assert cfg.scenes.dataset == dataset
    assert cfg.task.sound_split == split
    assert cfg.ppo.total_frames == (30_000_000 if dataset == "replica" else 60_000_000)


def test_config_by_path_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("ppo:\n  lr: 1.0e-3\nmodel:\n  policy: av_nav\n")
    cfg = load_config(
        str(path),
        [
            "ppo.lr=1e-4",
            "ppo.num_envs=16",
            "task.sensors=[depth,spectrogram]",
            "scenes.num_scenes=3",
            "ppo.use_linear_lr_decay=false",
        ],
    )
    assert cfg.model.policy == "av_nav"
    assert cfg.ppo.lr == pytest.approx(1e-4)  # "1e-4" is a string to YAML 1.1, coerced to float
    assert cfg.ppo.num_envs == 16 and isinstance(cfg.ppo.num_envs, int)
    assert cfg.task.sensors == ["depth", "spectrogram"]
    assert cfg.scenes.num_scenes == 3
    assert cfg.ppo.use_linear_lr_decay is False


def test_optional_accepts_null():
    assert load_config(None, ["scenes.num_scenes=null"]).scenes.num_scenes is None


def test_unknown_key_names_key_and_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config("replica_unheard", ["ppo.learning_rate=0.1"])
    msg = str(err.value)
    assert "ppo.learning_rate" in msg and "ppo.lr" in msg and "ppo.clip_param" in msg
    assert "did you mean" not in msg  # no section has learning_rate


def test_a_key_under_the_wrong_section_names_the_right_one():
    with pytest.raises(ConfigError, match=r"'train.data_root' \(in command line\) \(did you mean scenes.data_root\?\)"):
        load_config("replica_unheard", ["train.data_root=DATA"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lr' \(in command line\) \(did you mean ppo.lr\?\)"):
        load_config("replica_unheard", ["lr=0.1"])  # a key without its section


def test_unknown_section_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimiser:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "optimiser" in str(err.value) and str(path) in str(err.value) and "ppo" in str(err.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("ppo.num_envs=abc", "ppo.num_envs"),
        ("ppo.lr=fast", "ppo.lr"),
        ("ppo.num_envs=2.5", "ppo.num_envs"),
        ("ppo.use_clipped_value_loss=3", "ppo.use_clipped_value_loss"),
        ("scenes.dataset=gibson", "scenes.dataset"),
        ("task.sensors=depth", "task.sensors"),
        ("ppo=3", "ppo"),
    ],
)
def test_wrong_type_names_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert repr(key) in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ppo.num_envs=0"], "'ppo.num_envs' must be positive, got 0"),
        (["ppo.lr=-1e-4"], "'ppo.lr' must be positive"),
        (["train.checkpoint_interval=0"], "'train.checkpoint_interval' must be positive"),
        (["scenes.num_scenes=0"], "'scenes.num_scenes' must be positive"),
        (["acoustics.ism_order=-1"], "'acoustics.ism_order' must be >= 0, got -1"),
        (["train.val_interval=-5"], "'train.val_interval' must be >= 0"),
        (["ppo.gamma=1.01"], "'ppo.gamma' must be in [0, 1]"),
        (["ppo.num_envs=4", "ppo.num_mini_batch=5"], "'ppo.num_mini_batch' (5) must be at most ppo.num_envs (4)"),
        (["model.fusion_dim=100", "model.fusion_heads=3"], "'model.fusion_dim' (100) must be a multiple"),
        (["model.ase_dim=63"], "'model.ase_dim' must be even"),
        (["model.fusion_dim=1", "model.fusion_heads=1"], "'model.fusion_dim' (1) must be at least 2: the ASGF fusion"),
        (["model.ase_dim=2"], "'model.ase_dim' (2) must be at least 4: the ASGF fusion layer-normalises it"),
        (["task.min_geodesic_distance=5", "task.max_geodesic_distance=2"], "'task.min_geodesic_distance' (5.0)"),
        (["train.seed=-1"], "'train.seed' must be >= 0, got -1"),
        ([f"train.seed={2**64 - 100}"], f"'train.seed' must be below 2**32, got {2**64 - 100}"),
        (["scenes.dataset=tiny", "scenes.num_scenes=2"], "'scenes.num_scenes': preset 'tiny': num_scenes=2 is too"),
        (["scenes.dataset=tiny", "scenes.num_scenes=4"], "'scenes.num_scenes': preset 'tiny' has 3 scenes, fewer than"),
        (["task.max_geodesic_distance=nan"], "'task.max_geodesic_distance' (in command line) must be a finite"),
        (["task.slack_reward=-inf"], "'task.slack_reward' (in command line) must be a finite number, got '-inf'"),
        (["ppo.lr=.inf"], "'ppo.lr' (in command line) must be a finite number, got inf"),
        (["ppo.total_frames=.nan"], "'ppo.total_frames' (in command line) expects int"),
        (["acoustics.max_rir_seconds=4"], "'acoustics.max_rir_seconds' must be below 4.0 s"),
        (["ppo.num_envs=1", "ppo.num_steps=1", "ppo.num_mini_batch=1"], "'ppo.num_envs' (1) and 'ppo.num_steps' (1)"),
    ],
)
def test_values_out_of_range_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_range_limits_themselves_are_accepted():
    cfg = load_config(None, ["scenes.num_scenes=null", "train.val_interval=0", "ppo.gamma=1", "ppo.num_mini_batch=5"])
    assert cfg.scenes.num_scenes is None and cfg.train.val_interval == 0 and cfg.ppo.num_mini_batch == cfg.ppo.num_envs
    for envs, steps in ((1, 2), (2, 1)):  # the smallest rollouts PPO can normalise advantages over
        cfg = load_config(None, [f"ppo.num_envs={envs}", f"ppo.num_steps={steps}", "ppo.num_mini_batch=1"])
        assert cfg.ppo.num_envs * cfg.ppo.num_steps == 2


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.run_dir=0755", "train.run_dir", "0755"),  # YAML 1.1: octal 493
        ("train.run_dir=2024_06_01", "train.run_dir", "2024_06_01"),  # YAML 1.1: 20240601
        ("train.run_dir=1:30", "train.run_dir", "1:30"),  # YAML 1.1: sexagesimal 90
        ("train.run_dir=2024-06-01", "train.run_dir", "2024-06-01"),  # YAML 1.1: a date
        ("train.run_dir='runs/a b'", "train.run_dir", "runs/a b"),  # quotes that reached the program
        ('scenes.soundspaces_root="null"', "scenes.soundspaces_root", "null"),  # quoted: the text, not None
        ("train.run_dir='null'", "train.run_dir", "null"),  # quoted: a run directory named so
        ("task.doa_checkpoint=0x1F", "task.doa_checkpoint", "0x1F"),  # YAML 1.1: 31
        ("model.policy=yes", "model.policy", "yes"),  # YAML 1.1: True (the registry names it later)
        ("scenes.soundspaces_root=0755", "scenes.soundspaces_root", "0755"),
        ("scenes.soundspaces_root=null", "scenes.soundspaces_root", None),  # optional: YAML's null spellings
        ("scenes.soundspaces_root=~", "scenes.soundspaces_root", None),
        ("train.best_metric=none", "train.best_metric", "none"),
        ("task.sensors=[spectrogram]", "task.sensors", ["spectrogram"]),
        ("task.sensors=[rgb, 'depth', spectrogram]", "task.sensors", ["rgb", "depth", "spectrogram"]),
        ("task.sensors=[0755, 1:30]", "task.sensors", ["0755", "1:30"]),
        ("task.sensors=[]", "task.sensors", []),
        ("ppo.num_envs=1_6", "ppo.num_envs", 16),  # numbers are still numbers, as in a config file
        ("ppo.lr=1e-4", "ppo.lr", 1e-4),  # which YAML 1.1 reads as text
    ],
)
def test_text_overrides_keep_the_text_as_typed(override, key, expected):
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == expected


@pytest.mark.parametrize("override", ["train.run_dir=", "scenes.data_root=''", "train.run_dir=' '"])
def test_an_empty_run_or_data_directory_is_refused_by_name(override):
    """An empty path is the working directory: checkpoints or baked scenes would land beside the code."""
    with pytest.raises(ConfigError, match=f"config key '{override.split('=')[0]}' must name a directory"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["train.run_dir=null", "task.doa_checkpoint=~", "task.spectrogram_store=NULL"])
def test_null_in_a_text_field_that_takes_none_is_refused_as_in_a_file(override: str, tmp_path: Path) -> None:
    """``null`` is no path: read as the text it made a run directory or a store named ``null``."""
    key, _, raw = override.partition("=")
    section, name = key.split(".")
    (tmp_path / "c.yaml").write_text(f"{section}:\n  {name}: {raw}\n")
    for source, overrides in (("command line", [override]), (str(tmp_path / "c.yaml"), [])):
        with pytest.raises(ConfigError) as refused:
            load_config(tmp_path / "c.yaml" if overrides == [] else None, overrides)
        message = str(refused.value)
        typed = f"'{key}=\"null\"' in a shell" if source == "command line" else f"{name}: 'null'"
        assert message == (
            f"config key {key!r} (in {source}) expects str, got None (NoneType); quote it for the text, as YAML does "
            f"({typed}); a folder named ~ is ./~ (a quoted ~ is still the home directory)"
        )
        if source == "command line":  # the hint, typed in a shell, gives the text
            quoted = shlex.split(typed.removesuffix(" in a shell"))
            assert getattr(getattr(load_config(None, quoted), section), name) == "null"


def test_script_options_are_checked_with_the_config_they_join() -> None:
    """``--dataset tiny`` with ``scenes.num_scenes=10``: refused by key, not a ValueError when the bake starts."""
    with pytest.raises(ConfigError, match="'scenes.num_scenes': preset 'tiny' has 3 scenes, fewer than num_scenes=10"):
        load_config("replica_heard", ["scenes.num_scenes=10"], {"scenes.dataset": "tiny"})
    with pytest.raises(ConfigError, match="config key 'scenes.image_size' \\(in command-line options\\) expects int"):
        load_config(None, [], {"scenes.image_size": "big"})
    cfg = load_config("replica_heard", ["scenes.data_root=a"], {"scenes.data_root": "b", "scenes.num_scenes": 3})
    assert (cfg.scenes.data_root, cfg.scenes.num_scenes) == ("b", 3)  # an option wins over an override


def test_a_config_path_with_a_directory_is_that_file_or_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("nonexistent_dir/replica_heard.yaml", "./replica_heard.yaml", str(tmp_path / "replica_heard")):
        with pytest.raises(ConfigError, match=f"^config file {name!r} does not exist$"):
            load_config(name)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match="^config file 'dir/' is not a file$"):
        load_config("dir/")
    (tmp_path / "dir" / "replica_heard.yaml").write_text("train:\n  run_dir: mine\n")
    assert load_config("dir/replica_heard.yaml").train.run_dir == "mine"
    assert load_config("replica_heard.yaml").train.run_dir == load_config("replica_heard").train.run_dir != "mine"


def test_a_config_file_with_a_non_finite_number_names_the_key(tmp_path):
    path = tmp_path / "inf.yaml"
    path.write_text("task:\n  max_geodesic_distance: .inf\n")
    with pytest.raises(ConfigError, match=f"'task.max_geodesic_distance' \\(in {path}\\) must be a finite number"):
        load_config(str(path))


def test_a_config_file_that_is_not_utf8_text_is_named(tmp_path):
    path = tmp_path / "utf16.yaml"
    path.write_bytes("ppo:\n  lr: 1.0e-4\n".encode("utf-16"))  # starts with the byte-order mark ff fe
    with pytest.raises(ConfigError, match=f"^config file {path} is not UTF-8 text \\(invalid start byte at byte 0\\)"):
        load_config(str(path))


def test_a_key_given_twice_in_a_config_file_is_an_error_not_a_silent_reset(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("ppo:\n  lr: 1.0e-4\ntrain:\n  seed: 7\nppo:\n  num_steps: 32\n")  # would drop ppo.lr
    with pytest.raises(ConfigError, match=f"^config file {path} .*key 'ppo' appears twice .*lines 1 and 5"):
        load_config(str(path))
    path.write_text("ppo:\n  lr: 1.0e-4\n  lr: 2.0e-4\n")
    with pytest.raises(ConfigError, match="key 'lr' appears twice"):
        load_config(str(path))


def test_text_fields_in_a_config_file_keep_the_text_as_typed(tmp_path):
    """YAML 1.1 reads 0755, 0x1F and 12:30 as the numbers 493, 31 and 750; in a text field they stay as typed."""
    path = tmp_path / "text.yaml"
    path.write_text("train:\n  run_dir: 0755\n  seed: 1_000\nscenes:\n  data_root: 12:30\ntask:\n  max_steps: 500\n")
    cfg = load_config(str(path))
    assert (cfg.train.run_dir, cfg.scenes.data_root) == ("0755", "12:30")
    assert (cfg.train.seed, cfg.task.max_steps) == (1000, 500)  # plain decimals are still numbers
    assert type(cfg.train.seed) is int  # a plain int, which the saved config.yaml can hold
    for written in ("2.10", "1_000", "1e3", "-0", "2024-06-01"):  # numbers and dates in a text field: as written
        path.write_text(f"train:\n  run_dir: {written}\nppo:\n  lr: 2.50e-4\n")
        cfg = load_config(str(path))
        assert cfg.train.run_dir == written and cfg.ppo.lr == 2.5e-4 and type(cfg.ppo.lr) is float
        save_config(cfg, tmp_path / "saved.yaml")
        assert load_config(str(tmp_path / "saved.yaml")).train.run_dir == written
    path.write_text("task:\n  use_doa: 5\n")
    with pytest.raises(ConfigError, match=r"'task.use_doa' .* expects bool, got 5 \(int\)$"):
        load_config(str(path))
    path.write_text("ppo:\n  num_envs: 0x10\n")
    with pytest.raises(ConfigError, match="'ppo.num_envs' .* expects int, got '0x10'"):
        load_config(str(path))


def test_a_number_with_a_leading_zero_is_refused_in_a_file_and_on_the_command_line(tmp_path: Path) -> None:
    """``seed: 0755`` is 493 to YAML 1.1 and 755 to a reader: refused in both places, naming the key, where a
    file once gave 755 and an override 493; a lone 0 and plain decimals still read as numbers."""
    path = tmp_path / "octal.yaml"
    path.write_text("train:\n  seed: 0755\n")
    with pytest.raises(ConfigError, match=r"'train.seed' \(in .*octal.yaml\) expects a decimal int, got '0755'"):
        load_config(str(path))
    for written in ("0755", "-007", "0x1F"):
        with pytest.raises(ConfigError, match=f"'train.seed' \\(in command line\\) expects .*int, got '{written}'"):
            load_config(None, [f"train.seed={written}"])
    assert load_config(None, ["train.seed=0", "ppo.num_envs=12"]).train.seed == 0
    assert load_config(None, ["ppo.num_envs=12"]).ppo.num_envs == 12


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["ppo.lr"])
    with pytest.raises(ConfigError, match=r"override 'task.sensors=\[depth': the value '\[depth' is not valid YAML"):
        load_config(None, ["task.sensors=[depth"])
    with pytest.raises(ConfigError, match="available"):
        load_config("no_such_config")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("mp3d_heard", ["ppo.lr=3e-4"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(str(path)) == cfg
    assert yaml.safe_load(path.read_text())["scenes"]["dataset"] == "mp3d"


def test_every_bundled_config_is_valid():
    paths = sorted(CONFIG_DIR.glob("*.yaml"))
    assert {p.stem for p in paths} >= {"replica_heard", "replica_unheard", "mp3d_heard", "mp3d_unheard", "tiny_heard"}
    for path in paths:
        cfg = load_config(str(path))
        dataset, sound_split = path.stem.split("_")
        assert (cfg.scenes.dataset, cfg.task.sound_split) == (dataset, sound_split), path.name


def _run_script(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_ppo.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_train_script_help():
    result = _run_script("--help")
    assert result.returncode == 0
    assert "--config" in result.stdout and "--resume" in result.stdout


def test_train_script_rejects_bad_override_with_key_name():
    result = _run_script("--config", "replica_unheard.yaml", "ppo.not_a_key=1")
    assert result.returncode == 2
    assert "ppo.not_a_key" in result.stderr and "ppo.lr" in result.stderr
    result = _run_script("--config", "replica_unheard.yaml", "ppo.num_steps=many")
    assert result.returncode == 2 and "ppo.num_steps" in result.stderr


def test_build_scenes_script_takes_the_dataset_from_the_config(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_scenes.py"),
            "--config",
            "tiny_heard",
            "--data-root",
            str(tmp_path),
            "--stages",
            "layout",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "scenes").iterdir()] == ["tiny"]


def test_the_response_length_limit_is_the_late_noise_bank():
    from asgf_nav.acoustics.binaural import NOISE_SECONDS
    from asgf_nav.config import LATE_NOISE_SECONDS

    assert LATE_NOISE_SECONDS == NOISE_SECONDS
    assert load_config(None, ["acoustics.max_rir_seconds=3.5"]).acoustics.max_rir_seconds == 3.5


def test_an_integer_key_refuses_a_fractional_number_written_as_text():
    from asgf_nav.config import ConfigError, load_config

    for text in ("2.5e0", "2.5E+0"):  # YAML 1.1 reads these as strings, not floats
        with pytest.raises(ConfigError, match="'ppo.num_envs'"):
            load_config(None, [f"ppo.num_envs={text}"])
    assert load_config(None, ["ppo.total_frames=3e6"]).ppo.total_frames == 3_000_000


def test_range_boundaries_documented_as_inclusive_or_exclusive():
    from asgf_nav.config import ConfigError, load_config

    cfg = load_config(
        None,
        [
            "ppo.gamma=0",
            "ppo.gae_lambda=0",
            f"train.seed={2**32 - 1}",
            "task.min_geodesic_distance=3",
            "task.max_geodesic_distance=3",
        ],
    )
    assert (cfg.ppo.gamma, cfg.train.seed, cfg.task.min_geodesic_distance) == (0.0, 2**32 - 1, 3.0)
    with pytest.raises(ConfigError, match="below 2\\*\\*32"):
        load_config(None, [f"train.seed={2**32}"])


def test_a_yaml_merge_key_is_not_taken_for_a_key_given_twice(tmp_path: Path) -> None:
    """``<<`` merges shared settings into a section, and the section's own keys override the merged ones."""
    path = tmp_path / "merged.yaml"
    path.write_text("ppo:\n  <<: {lr: 1.0e-3, num_steps: 32}\n  num_steps: 64\n")
    cfg = load_config(str(path))
    assert (cfg.ppo.lr, cfg.ppo.num_steps) == (1e-3, 64)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_config_file_is_refused_and_an_empty_mapping_gives_the_defaults(tmp_path: Path, text: str) -> None:
    """A file cut to nothing by a bad copy must not train the default experiment (Replica, 30 M frames) in its
    place; ``{}`` says the defaults on purpose."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^config file {path} holds no settings .*write {{}}"):
        load_config(str(path))
    path.write_text(text + "{}\n")
    assert load_config(str(path)) == ExperimentConfig()


def test_a_config_file_that_is_not_a_mapping_is_refused_by_name(tmp_path: Path) -> None:
    """A list at the top level is a ConfigError naming the file, not an AttributeError from deep inside."""
    path = tmp_path / "list.yaml"
    path.write_text("- ppo.lr=1e-4\n- ppo.num_envs=4\n")
    with pytest.raises(ConfigError, match=f"^config file {path} must hold a mapping at the top level$"):
        load_config(str(path))


# every key the field comments document as > 0, >= 0 or in [0, 1], written out independently of config.py
DOCUMENTED_POSITIVE = [
    "scenes.image_size", "scenes.rir_cache_mb", "scenes.num_scenes", "acoustics.sources_per_scene", "acoustics.rays",
    "acoustics.max_rir_seconds", "acoustics.ear_height", "acoustics.max_image_sources", "task.max_steps",
    "task.success_distance", "task.train_episodes_per_scene", "task.val_episodes", "task.test_episodes",
    "model.hidden_size", "model.fusion_dim", "model.fusion_heads", "model.ase_dim", "ppo.num_envs", "ppo.num_steps",
    "ppo.ppo_epoch", "ppo.num_mini_batch", "ppo.clip_param", "ppo.lr", "ppo.eps", "ppo.max_grad_norm",
    "ppo.total_frames", "train.checkpoint_interval", "train.val_episodes", "train.stats_window_episodes",
]  # fmt: skip
DOCUMENTED_NON_NEGATIVE = [
    "scenes.workers", "acoustics.ism_order", "task.min_geodesic_distance", "task.doa_cache_size",
    "task.spectrogram_cache_size", "ppo.value_loss_coef", "ppo.entropy_coef", "train.log_interval",
    "train.keep_checkpoints", "train.val_interval", "train.torch_threads", "train.seed",
]  # fmt: skip


@pytest.mark.parametrize("key", DOCUMENTED_POSITIVE)
def test_every_quantity_that_must_be_positive_refuses_zero(key: str) -> None:
    """A zero size, count or rate fails at load time naming its key, not deep inside a run."""
    with pytest.raises(ConfigError, match=rf"^config key '{key}' must be positive, got 0(\.0)?$"):
        load_config(None, [f"{key}=0"])


@pytest.mark.parametrize("key", DOCUMENTED_NON_NEGATIVE)
def test_every_quantity_that_must_not_be_negative_refuses_minus_one(key: str) -> None:
    """A negative count, cache size, interval or coefficient fails at load time naming its key."""
    with pytest.raises(ConfigError, match=rf"^config key '{key}' must be >= 0, got -1(\.0)?$"):
        load_config(None, [f"{key}=-1"])


@pytest.mark.parametrize("key", ["ppo.gamma", "ppo.gae_lambda"])
@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_discount_and_gae_lambda_outside_zero_one_are_refused(key: str, value: str) -> None:
    """gamma and GAE's lambda are weights in [0, 1]; anything else makes the returns diverge."""
    with pytest.raises(ConfigError, match=rf"^config key '{key}' must be in \[0, 1\], got {value}$"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize(
    ("override", "key", "expects"),
    [("ppo.num_envs=true", "ppo.num_envs", "int"), ("ppo.lr=true", "ppo.lr", "float")],
)
def test_a_boolean_is_not_taken_as_a_number(override: str, key: str, expects: str) -> None:
    """``true`` for a count or a rate is a mistake, not 1."""
    with pytest.raises(ConfigError, match=rf"'{key}' \(in command line\) expects {expects}, got True \(bool\)$"):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task:\n  sensors: [rgb, yes]\n", r"'task.sensors\[1\]' .* expects str, got True \(bool\)$"),
        ("train:\n  run_dir: yes\n", r"'train.run_dir' .* expects str, got True \(bool\)$"),
    ],
)
def test_a_boolean_in_a_text_field_of_a_config_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    """YAML 1.1 reads an unquoted ``yes`` as true: a text field or text list refuses it rather than keep "True"."""
    path = tmp_path / "text.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_nested_settings_flatten_to_dotted_keys() -> None:
    """Configs are compared key by key as ``section.key``, with no leading dot at the top level."""
    from asgf_nav.config import flatten_dotted

    nested = {"ppo": {"lr": 1e-4, "clip": {"value": 0.1}}, "seed": 3}
    assert flatten_dotted(nested) == {"ppo.lr": 1e-4, "ppo.clip.value": 0.1, "seed": 3}
    assert flatten_dotted(5, "task.max_steps") == {"task.max_steps": 5}


@pytest.mark.parametrize("override", ["task.spectrogram_store=", "task.spectrogram_store=  "])
def test_an_empty_override_of_a_text_field_is_the_empty_text(override: str) -> None:
    """``task.spectrogram_store=`` is the documented "never read a store"; it must not become null or fail."""
    assert load_config(None, [override]).task.spectrogram_store == ""


def test_a_list_as_a_key_in_a_config_file_is_refused_as_invalid_yaml(tmp_path: Path) -> None:
    """A mapping key that is a list (``? [a, b]``) is a ConfigError naming the file, not a TypeError."""
    path = tmp_path / "listkey.yaml"
    path.write_text("? [a, b]\n: 1\n")
    with pytest.raises(ConfigError, match=f"(?s)^config file {path} is not valid YAML: .*found unhashable key"):
        load_config(str(path))


def test_an_override_without_a_key_is_refused_as_malformed() -> None:
    """``=5`` has no key: it is refused as a malformed override, not looked up as the config key ''."""
    with pytest.raises(ConfigError, match=r"^override '=5' must look like key\.sub=value$"):
        load_config(None, ["=5"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [("train.run_dir =2024-06-01", "2024-06-01"), ("model.policy  =yes", "yes")],
)
def test_spaces_after_an_override_key_do_not_change_how_its_text_is_read(override: str, expected: str) -> None:
    """A space between the key and ``=`` still finds the text field, so its value stays text, not a date or bool."""
    section, name = override.split("=")[0].strip().split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == expected


@pytest.mark.parametrize("value", ["'runs/a", "'runs/a\"", '"runs', '"Final" vs "Draft"', "'a' 'b'", '"a" #2 "b"'])
def test_a_text_override_that_opens_a_quote_it_does_not_close_is_kept_as_typed(value: str) -> None:
    """Only a value wrapped in one matching pair of quotes is unquoted; a lone opening quote is part of the text,
    and so are quotes around parts of it (it was refused as invalid YAML)."""
    assert load_config(None, [f"train.run_dir={value}"]).train.run_dir == value


@pytest.mark.parametrize(
    ("override", "message"),
    [("scenes.num_scenes=abc", "'abc' \\(str\\)$"), ("scenes.num_scenes=[3]", "\\[3\\] \\(list\\)$")],
)
def test_an_optional_number_given_no_number_is_refused_by_name(override: str, message: str) -> None:
    """An optional int field given text or a list is a ConfigError naming the key, not a TypeError later."""
    prefix = r"^config key 'scenes.num_scenes' \(in command line\) expects int \| None, got "
    with pytest.raises(ConfigError, match=prefix + message):
        load_config(None, [override])


def test_an_optional_text_field_of_a_config_file_refuses_a_boolean(tmp_path: Path) -> None:
    """``soundspaces_root: yes`` (YAML 1.1's true) is refused naming the key, not kept as the path True."""
    path = tmp_path / "root.yaml"
    path.write_text("scenes:\n  soundspaces_root: yes\n")
    with pytest.raises(ConfigError, match=r"'scenes.soundspaces_root' .* expects str \| None, got True \(bool\)$"):
        load_config(str(path))


def test_an_integral_float_in_a_config_file_is_taken_by_an_int_field(tmp_path: Path) -> None:
    """``total_frames: 3.0e+7`` and ``num_envs: 8.0`` are whole numbers: read losslessly as the ints 30000000 and 8."""
    path = tmp_path / "floats.yaml"
    path.write_text("ppo:\n  total_frames: 3.0e+7\n  num_envs: 8.0\n")
    cfg = load_config(str(path))
    assert (cfg.ppo.total_frames, cfg.ppo.num_envs) == (30_000_000, 8)
    assert type(cfg.ppo.total_frames) is int and type(cfg.ppo.num_envs) is int


def test_list_items_of_text_stay_text_where_yaml_would_read_a_bool_null_or_date() -> None:
    """``task.sensors=[yes, null, 2024-06-01]`` is three names, as typed, not True, None and a date."""
    cfg = load_config(None, ["task.sensors=[yes, null, 2024-06-01]"])
    assert cfg.task.sensors == ["yes", "null", "2024-06-01"]


@pytest.mark.parametrize("spelling", ["null", "Null", "NULL", "~", "None"])
def test_every_null_spelling_clears_an_optional_field(spelling: str, tmp_path: Path) -> None:
    """Each of YAML's four null spellings, and Python's None, gives None for ``scenes.soundspaces_root`` (its
    default location) and ``scenes.num_scenes`` (the whole preset), on the command line and in a file."""
    config = tmp_path / "set.yaml"
    config.write_text("scenes:\n  soundspaces_root: x\n  num_scenes: 3\n")
    cfg = load_config(config, [f"scenes.soundspaces_root={spelling}", f"scenes.num_scenes={spelling}"])
    assert cfg.scenes.soundspaces_root is None and cfg.scenes.num_scenes is None
    config.write_text(f"scenes:\n  soundspaces_root: {spelling}\n  num_scenes: {spelling}\n")
    cfg = load_config(config)
    assert cfg.scenes.soundspaces_root is None and cfg.scenes.num_scenes is None


def test_of_an_override_given_twice_the_later_holds() -> None:
    """As with options on a command line: a script's or a Makefile's defaults first, the user's after them."""
    assert load_config(None, ["ppo.num_envs=4", "ppo.lr=1e-4", "ppo.num_envs=6"]).ppo.num_envs == 6


def test_a_misspelt_key_gets_the_nearest_valid_one_and_a_setting_is_no_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'ppo.lrr' .*\(did you mean ppo.lr\?\)"):
        load_config(None, ["ppo.lrr=1e-4"])
    with pytest.raises(ConfigError, match=r"'model.polcy' .*\(did you mean model.policy\?\)"):
        load_config(None, ["model.polcy=av_nav"])
    with pytest.raises(
        ConfigError, match=r"config key 'ppo.lr' \(in command line\) is a setting, not a section: it has no key 'x'"
    ):
        load_config(None, ["ppo.lr.x=1"])


def test_a_home_directory_tilde_in_a_path_key_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell leaves ``train.run_dir=~/runs`` as typed; a YAML file does too."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "paths.yaml"
    config.write_text("scenes:\n  data_root: ~/data\n")
    cfg = load_config(config, ["train.run_dir=~/runs/a", "task.doa_checkpoint=~/heads/h.pt"])
    assert cfg.scenes.data_root == str(tmp_path / "data") and cfg.train.run_dir == str(tmp_path / "runs" / "a")
    assert cfg.task.doa_checkpoint == str(tmp_path / "heads" / "h.pt")
    assert load_config(None, ["scenes.soundspaces_root=~"]).scenes.soundspaces_root is None  # YAML's null, not home


@pytest.mark.parametrize("value", ["2024-06-01", "yes", "off"])
def test_an_optional_text_override_keeps_what_yaml_would_read_as_a_date_or_bool(value: str) -> None:
    """``scenes.soundspaces_root`` is text or None: ``2024-06-01`` or ``yes`` there is a directory name as typed."""
    assert load_config(None, [f"scenes.soundspaces_root={value}"]).scenes.soundspaces_root == value


def test_load_config_from_python_takes_numpy_numbers_and_tuples_and_refuses_a_string_of_overrides() -> None:
    """What a notebook's sweep hands it: np.int64(4) is 4 and a tuple a list; one override string is refused
    instead of being read a character at a time."""
    import numpy as np

    cfg = load_config("tiny_heard", options={"ppo.num_envs": np.int64(4), "ppo.lr": np.float32(0.5),
                                             "task.sensors": ("depth", "spectrogram")})  # fmt: skip
    assert cfg.ppo.num_envs == 4 and type(cfg.ppo.num_envs) is int and cfg.ppo.lr == 0.5
    assert cfg.task.sensors == ["depth", "spectrogram"]
    for sensors in (np.array(["spectrogram", "depth"]), ("spectrogram", np.str_("depth"))):  # saved as plain text
        cfg = load_config("tiny_heard", options={"task.sensors": sensors})
        assert cfg.task.sensors == ["spectrogram", "depth"] and all(type(s) is str for s in cfg.task.sensors)
    for sensors in (np.array(["spectrogram", "depth"]), ("spectrogram", np.str_("depth"))):  # saved as plain text
        cfg = load_config("tiny_heard", options={"task.sensors": sensors})
        assert cfg.task.sensors == ["spectrogram", "depth"] and all(type(s) is str for s in cfg.task.sensors)
    with pytest.raises(TypeError, match="overrides must be a list of 'key.sub=value' strings, not the string"):
        load_config("tiny_heard", "ppo.lr=1e-4")


@pytest.mark.parametrize("key", ["scenes.data_root", "task.sound_split", "ppo.lr", "ppo.num_envs"])
def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path: Path, key: str) -> None:
    """Nested aliases make a few hundred bytes of YAML a value whose full repr runs to tens of megabytes (the
    loader shares the lists, so the value itself is small): the error quotes the value cut short."""
    lists = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lists += [f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    section, name = key.split(".")
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{section}:\n  {name}: [{', '.join(lists)}]\n")
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError, match=rf"config key '{key}' .*bomb\.yaml.*got \[\['lol', ") as info:
        load_config(path)
    assert len(str(info.value)) < 600


def test_every_key_says_what_it_sets_and_the_listing_reads_back_as_the_same_config(tmp_path):
    """describe_config (train_ppo.py --print-config): every key of every section with its comment from config.py
    (none undocumented), the choices of a Literal, the default beside a changed value; as a --config file it
    gives the same config back."""
    import dataclasses

    from asgf_nav.config import describe_config, field_comments

    for section in dataclasses.fields(ExperimentConfig):
        cls = type(getattr(ExperimentConfig(), section.name))
        assert set(field_comments(cls)) == {f.name for f in dataclasses.fields(cls)}, (
            f"{section.name}: a key lacks a comment"
        )
    cfg = load_config("tiny_heard", ["ppo.lr=1e-4", "task.sensors=[depth,spectrogram]", "scenes.num_scenes=3"])
    text = describe_config(cfg)
    assert "  lr: 0.0001  # Adam learning rate (default: 0.00025)\n" in text
    assert "  rir_on_missing: error  # error | silence; " in text
    assert "  sensors: [depth, spectrogram]  # any of " in text and "(default: ['rgb', 'depth', 'spectrogram'])" in text
    keys = sum(len(dataclasses.fields(getattr(cfg, s.name))) for s in dataclasses.fields(cfg))
    assert text.count("\n") == keys + len(dataclasses.fields(cfg))  # a line per key and per section
    (tmp_path / "listed.yaml").write_text(text, encoding="utf-8")
    assert load_config(tmp_path / "listed.yaml") == cfg


def test_a_fields_comment_is_its_trailing_one_or_else_the_lines_right_above_it():
    import dataclasses

    from asgf_nav.config import field_comments

    @dataclasses.dataclass
    class Settings:
        """A docstring is no comment."""

        # a first line
        # and a second
        above: int = 1
        trailing: int = 2  # trailing wins
        # above, unused: the trailing one is taken
        both: int = 3  # mine
        name: str = "a # not a comment"
        after_code: int = 4
        bare: int = 5  #
        # ------------------------------------------------ a section's header, a blank line below

        after_blank: int = 6
        spread: dict = dataclasses.field(
            default_factory=lambda: {"q": 1},
        )  # on the declaration's last line

        def helper(self) -> int:
            after_code = self.above * 2  # a method's local, not the field
            return after_code

    assert field_comments(Settings) == {
        "above": "a first line and a second",
        "trailing": "trailing wins",
        "both": "mine",
        "spread": "on the declaration's last line",
    }
