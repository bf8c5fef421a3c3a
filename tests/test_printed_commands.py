"""Commands that messages tell the user to run work when pasted into a shell as printed, also for a data root
or run directory with a space, a quote and a ``$`` (``~/My Data/ü run's $x``): pasted bare, such a path
made bash refuse the line, split it into other options, or bake a scene somewhere else."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import pytest

ODD = "My Data/ü run's $x (1)"


def words_after(text: str, start: str, end: str | None = None) -> list[str]:
    """The shell words of the command that follows ``start`` in ``text`` (up to ``end``), as bash reads them."""
    command = text.split(start, 1)[1]
    return shlex.split(command.split(end, 1)[0] if end else command)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_shell_command_quotes_what_needs_it_and_leaves_plain_words() -> None:
    from asgf_nav.logging_utils import shell_command

    assert shell_command("python", "scripts/build_scenes.py", "--data-root", Path("/data/x"), "CONFIG", 64) == (
        "python scripts/build_scenes.py --data-root /data/x CONFIG 64"
    )
    assert shlex.split(shell_command("--data-root", f"/tmp/{ODD}")) == ["--data-root", f"/tmp/{ODD}"]


@pytest.mark.parametrize("dataset", ["tiny", "soundspaces_replica"])
def test_the_rebake_hint_of_a_scene_names_its_odd_data_root_as_one_word(tmp_path: Path, dataset: str) -> None:
    from asgf_nav.scenes.store import rebuild_hint, scene_dir

    root = tmp_path / ODD
    directory = scene_dir(root, dataset, "room_0")
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text("{}")  # baked before: "again", with --force
    hint = rebuild_hint(directory / "manifest.json")
    words = words_after(hint, "it again: ", " (add" if dataset == "tiny" else None)
    script = "scripts/build_scenes.py" if dataset == "tiny" else "scripts/import_soundspaces.py"
    assert words[:2] == ["python", script]
    assert option(words, "--data-root") == str(root)
    assert option(words, "--dataset") == dataset.removeprefix("soundspaces_")
    assert option(words, "--scenes") == "room_0"
    assert words[-1] == "--force"


def test_the_view_size_hint_names_an_odd_data_root_as_one_word(tmp_path: Path) -> None:
    from asgf_nav.config import load_config
    from asgf_nav.scenes.store import SceneStoreError
    from asgf_nav.tasks.world import check_view_sizes

    root = tmp_path / ODD
    cfg = load_config("tiny_heard", [f"scenes.data_root={root}", "scenes.image_size=64"])
    with pytest.raises(SceneStoreError) as info:
        check_view_sizes({str(root / "scenes" / "tiny" / "tiny_room_test"): 48}, cfg)
    words = words_after(str(info.value), "(training does): ")
    assert option(words, "--data-root") == str(root)
    assert option(words, "--image-size") == "64"
    assert option(words, "--scenes") == "tiny_room_test"


def test_the_resume_hint_names_an_odd_run_directory_as_one_word(tmp_path: Path) -> None:
    from asgf_nav.rl.checkpoint import CheckpointError, check_resume_config

    run_dir = tmp_path / ODD
    with pytest.raises(CheckpointError) as info:
        check_resume_config({"policy_name": "av_nav"}, {"model": {"policy": "asgf"}}, run_dir)
    assert words_after(str(info.value), "own config: ") == ["--config", str(run_dir / "config.yaml"), "--resume"]


def test_the_doa_pool_hint_names_an_odd_scenes_root_as_one_word(tmp_path: Path) -> None:
    from asgf_nav.models.doa.config import DoaTrainConfig
    from asgf_nav.models.doa.pools import split_scene_names
    from asgf_nav.scenes.store import SceneStoreError

    root = tmp_path / ODD
    with pytest.raises(SceneStoreError) as info:
        split_scene_names(DoaTrainConfig(rooms="scenes", scenes_root=str(root), scenes_dataset="tiny"), "test")
    words = words_after(str(info.value), f"{root}: ")
    assert option(words, "--data-root") == str(root)
    assert words[words.index("--scenes") + 1 :] == ["tiny_room_test"]


def test_the_spectrogram_store_warning_names_odd_paths_as_one_word_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from asgf_nav.config import load_config
    from asgf_nav.run_checks import check_components

    store, run_dir = tmp_path / ODD / "no store", tmp_path / ODD / "run a"
    cfg = load_config("tiny_heard", [f"task.spectrogram_store={store}", f"train.run_dir={run_dir}"])
    with caplog.at_level(logging.WARNING, logger="asgf_nav.run_checks"):
        check_components(cfg)
    words = words_after(caplog.text, "bake it with ", " (the run's")
    assert words[:2] == ["python", "scripts/bake_spectrograms.py"]
    assert option(words, "--config") == str(run_dir / "config.yaml")
    assert option(words, "--out") == str(store)
