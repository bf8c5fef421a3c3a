"""Script entry points: input the user can fix ends with one ``error:`` line and status 2, not a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from asgf_nav.cli import run_script
from asgf_nav.config import ConfigError
from asgf_nav.eval.evaluator import EvaluationFileError
from asgf_nav.eval.progress import EvaluationProgressError
from asgf_nav.io import WriteError
from asgf_nav.models.doa.checkpoint import DoaCheckpointError
from asgf_nav.parallel import WorkerDiedError
from asgf_nav.rl.checkpoint import CheckpointError
from asgf_nav.scenes.presets import UnknownSceneError, get_preset
from asgf_nav.scenes.soundspaces import SoundSpacesDataError
from asgf_nav.scenes.store import SceneStoreError
from asgf_nav.sounds.bank import SoundBankError
from asgf_nav.tasks.episodes import EpisodeError
from asgf_nav.tasks.soundspaces_export import ExportError
from asgf_nav.tasks.spectrogram_store import SpectrogramStoreError

REPO = Path(__file__).resolve().parent.parent


USER_ERRORS = [
    ConfigError("bad key"), SceneStoreError("no baked scene"), UnknownSceneError("no scene"),
    EvaluationProgressError("another evaluation's progress file"), EvaluationFileError("no summary.json"),
    DoaCheckpointError("DoA checkpoint x.pt is not readable"), CheckpointError("checkpoint y.pt is corrupt"),
    SoundSpacesDataError("no replica scene under data/soundspaces"),
    EpisodeError("episode 3 in val_multiple.json.gz is malformed: KeyError('goal_position')"),
    ExportError("scene tiny_room_test has 16000 Hz RIRs; SoundSpaces replica uses 44100 Hz"),
    SpectrogramStoreError("spectrograms/tiny/a/telephone.npy was baked from other RIRs"),
    SoundBankError("sound 'telephon_x' is not in the bank"), WorkerDiedError("a bake worker died (SIGKILL)"),
    WriteError("cannot write runs/a/checkpoints/ckpt_000050.pt: no space left on device", 28),
]  # fmt: skip


@pytest.mark.parametrize("error", USER_ERRORS)
def test_user_errors_become_one_error_line(error, capsys):
    def main() -> int:
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_script_that_fills_the_disk_ends_with_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """torch.save on a full disk raises a RuntimeError that names neither the file nor the disk: a script
    ends with one line that names both, not a traceback."""
    import shutil

    import torch

    from asgf_nav import io
    from asgf_nav.io import atomic_write

    full = shutil.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: full)

    def save(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    target = tmp_path / "ckpt_000050.pt"

    def main() -> int:
        atomic_write(target, lambda p: torch.save({"update": 50}, p))
        return 0

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {target}: no space left on device ({tmp_path} has 0 bytes free")
    assert err.count("\n") == 1 and "unexpected pos 704 vs 598" in err and not target.exists()


def test_a_file_the_user_may_not_read_ends_in_one_line_naming_it(capsys):
    """Another user's data root baked with umask 077 failed in a traceback wherever no check looked first."""
    import errno

    def main() -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/lab/data/scenes/tiny")

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: Permission denied: /lab/data/scenes/tiny: it belongs to another user")
    for refused, said in (
        (PermissionError(errno.EPERM, "Operation not permitted", "/lab/x"), "Operation not permitted: /lab/x\n"),
        (PermissionError("no access to the device"), "no access to the device\n"),  # no errno, no file
    ):
        with pytest.raises(SystemExit):
            run_script(lambda refused=refused: (_ for _ in ()).throw(refused))
        assert capsys.readouterr().err == f"error: {said}"  # no advice about another user's files


def test_return_codes_pass_through_and_bugs_keep_their_traceback():
    for returned, code in ((None, 0), (0, 0), (3, 3)):
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda value=returned: value)
        assert exit_info.value.code == code

    def buggy() -> int:
        raise RuntimeError("a bug, not bad input")

    with pytest.raises(RuntimeError, match="a bug, not bad input"):
        run_script(buggy)


def test_overrides_may_stand_on_both_sides_of_an_option():
    import argparse

    from asgf_nav.cli import add_config_arguments

    parser = argparse.ArgumentParser(prog="train_ppo.py")  # as scripts/train_ppo.py builds it
    add_config_arguments(parser, default="replica_unheard.yaml")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(["ppo.lr=1e-4", "--resume", "train.run_dir=runs/b", "--config", "tiny_heard"])
    assert args.overrides == ["ppo.lr=1e-4", "train.run_dir=runs/b"]
    assert args.resume and args.config == "tiny_heard"
    assert parser.parse_args([]).overrides == [] and not parser.parse_args([]).resume


def test_unknown_scene_is_named_with_the_choices():
    with pytest.raises(UnknownSceneError, match="preset 'tiny' has no scene 'kitchen'; scenes: \\['tiny_apartment'"):
        get_preset("tiny").spec("kitchen")


def test_script_with_an_unknown_scene_exits_with_an_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_scenes.py"), "--dataset", "tiny", "--scenes", "kitchen",
         "--data-root", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: preset 'tiny' has no scene 'kitchen'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("evaluate", ["--agent", "oracle", "--episodes", "-3"], "argument --episodes: must be positive, got -3"),
        ("evaluate", ["--agent", "oracle", "--num-envs", "0"], "argument --num-envs: must be positive, got 0"),
        ("tsne", ["--checkpoint", "x.pt", "--perplexity", "0"], "argument --perplexity: must be positive, got 0.0"),
        ("train_baselines", ["--epochs", "0"], "argument --epochs: must be positive, got 0"),
        ("tsne", ["--checkpoint", "x.pt", "--perplexity", "inf"], "argument --perplexity: must be a finite number"),
        # options of another kind of agent would be recorded and ignored
        ("evaluate", ["--agent", "random", "--deterministic"], "--deterministic sets how a checkpoint's policy acts"),
        ("evaluate", ["--agent", "oracle", "--random-stop", "random"], "--random-stop is the random agent's STOP"),
    ],
)
def test_bad_option_values_are_named(script, argv, message, capsys):
    import importlib

    main = importlib.import_module(script).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "tiny_heard", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_soundspaces_scripts_name_missing_data_and_unknown_scenes_before_writing(tmp_path, capsys):
    import export_soundspaces
    import import_soundspaces

    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: import_soundspaces.main(["--root", str(tmp_path / "none"), "--dataset", "replica"]))
    assert exit_info.value.code == 2
    assert "error: no SoundSpaces replica scene found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # an import that could not be written is named first
        import_soundspaces.main(["--root", str(tmp_path / "none"), "--dataset", "replica", "--data-root", "/proc/x"])
    assert exit_info.value.code == 2
    assert "--data-root: cannot create directory /proc/x" in capsys.readouterr().err

    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exit_info:
        export_soundspaces.main(["--out", str(out), "--dataset", "tiny", "--scenes", "tiny_room_test", "nope"])
    assert exit_info.value.code == 2
    assert "--scenes: ['nope'] are not in splits ['train', 'val', 'test'] of preset tiny" in capsys.readouterr().err
    assert not out.exists()


def test_check_output_names_an_output_that_cannot_be_written(tmp_path, capsys):
    import argparse

    from asgf_nav.cli import check_output

    parser = argparse.ArgumentParser(prog="script")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    check_output(parser, "--out", tmp_path / "new" / "deeper" / "table.json")  # writable, and nothing left:
    assert not (tmp_path / "new").exists()  # the writer makes the folders, so a refused run leaves none
    check_output(parser, "--out", tmp_path / "runs", directory=True)
    check_output(parser, "--out", None)
    for path, directory, message in (
        (blocked / "table.json", False, f"--out: cannot create directory {blocked}"),
        (blocked, True, f"--out: cannot create directory {blocked}"),
        (tmp_path, False, f"--out: {tmp_path} is a directory; give a file name"),
        (Path("/proc/map.png"), False, "--out: directory /proc is not writable"),  # even for root
    ):
        with pytest.raises(SystemExit) as exit_info:
            check_output(parser, "--out", path, directory=directory)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    check_output(parser, "--out", tmp_path / "map.PDF", figure=True)
    for name in ("map.npz", "map"):  # the states file's suffix, or none: no figure format
        with pytest.raises(SystemExit):
            check_output(parser, "--out", tmp_path / name, figure=True)
        assert f"--out: {tmp_path / name} is no figure format matplotlib writes; end it in one of [" in (
            capsys.readouterr().err
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "runs"]  # no probe file left


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("report.py", ["runs", "--table", "{blocked}/t.md"], "--table: cannot create directory {blocked}"),
        ("pretrain_doa.py", ["--export", "{blocked}/w.pt"], "--export: cannot create directory {blocked}"),
        ("convert_hrtf.py", ["--out", "{blocked}/k.npz"], "--out: cannot create directory {blocked}"),
        ("convert_hrtf.py", ["--wheel", "{blocked}"], "--wheel: {blocked} is not a wheel"),
    ],
)
def test_every_output_flag_is_checked_before_work(tmp_path, script, args, message):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a directory, not a wheel")
    command = [sys.executable, str(REPO / "scripts" / script), *(a.format(blocked=blocked) for a in args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert message.format(blocked=blocked) in done.stderr.strip().splitlines()[-1]


def test_non_negative_arguments_accept_zero_and_refuse_negatives():
    """`--seed 0` / `--threads 0` are valid: the non-negative types accept 0 and refuse -1 with the bound named."""
    import argparse

    from asgf_nav.cli import non_negative_float, non_negative_int

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=non_negative_int)
    parser.add_argument("--gap", type=non_negative_float)
    args = parser.parse_args(["--seed", "0", "--gap", "0"])
    assert args.seed == 0 and args.gap == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0, got -1"):
        non_negative_int("-1")


def test_the_excepthook_shortens_only_ctrl_c_and_a_bug_keeps_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """The hook cli installs on import turns a KeyboardInterrupt into one line; any other uncaught exception is
    a bug, and hiding its traceback behind "interrupted" would leave nothing to debug."""
    from asgf_nav.cli import _report_interrupt

    _report_interrupt(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"
    try:
        raise RuntimeError("a bug, not bad input")
    except RuntimeError as exc:
        _report_interrupt(RuntimeError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("RuntimeError: a bug, not bad input\n")
    assert "interrupted" not in err


def test_int_at_least_accepts_its_minimum_and_names_the_bound_below_it() -> None:
    """`build_scenes.py --num-scenes 3` (one scene per split) is valid: the bound itself is accepted, one less is
    refused with the reason."""
    import argparse

    from asgf_nav.cli import int_at_least

    parse = int_at_least(3, "one scene per split")
    assert parse("3") == 3 and parse("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be >= 3 \(one scene per split\), got 2"):
        parse("2")


def test_number_type_keeps_the_fields_kind_and_its_bound() -> None:
    """A bounded count of the DoA scripts stays an int (`--examples 5` is 5, not 5.0, and 2.5 is refused); a
    bounded float such as --lr stays a float; --threads may be 0, not -1; a field in neither list is the plain type."""
    import argparse

    from asgf_nav.cli import number_type

    count = number_type(int, "examples", ("examples", "lr"), ("threads",))
    assert count("5") == 5 and type(count("5")) is int
    with pytest.raises(ValueError):
        count("2.5")
    with pytest.raises(argparse.ArgumentTypeError, match="must be positive, got 0"):
        count("0")
    rate = number_type(float, "lr", ("examples", "lr"), ("threads",))
    assert rate("0.5") == 0.5 and type(rate("1")) is float
    threads = number_type(int, "threads", ("examples", "lr"), ("threads",))
    assert threads("0") == 0 and type(threads("0")) is int
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0, got -1"):
        threads("-1")
    assert number_type(int, "seed", ("examples",), ("threads",)) is int


def test_dataset_and_data_root_flags_override_the_config(tmp_path: Path) -> None:
    """--dataset / --data-root must replace scenes.dataset / scenes.data_root, or a run reads the config's scenes
    while the user believes it reads theirs; left out, the config's values stand."""
    import argparse

    from asgf_nav.cli import config_from_args

    given = argparse.Namespace(config="tiny_heard", overrides=[], dataset="replica", data_root=str(tmp_path))
    cfg = config_from_args(given)
    assert cfg.scenes.dataset == "replica" and cfg.scenes.data_root == str(tmp_path)
    plain = config_from_args(argparse.Namespace(config="tiny_heard", overrides=["scenes.data_root=elsewhere"]))
    assert plain.scenes.dataset == "tiny" and plain.scenes.data_root == "elsewhere"


def test_field_help_reads_each_fields_trailing_comment_and_shows_its_default() -> None:
    import argparse
    import dataclasses

    from asgf_nav.cli import field_help
    from asgf_nav.eval.doa_eval import EvalConfig
    from asgf_nav.models.doa.config import DoaTrainConfig

    @dataclasses.dataclass
    class Settings:
        rate: float = 0.5  # how fast, in Hz
        name: str = "a # not a comment"
        count: int = 3  # items per batch

    helps = field_help(Settings)
    assert helps == {
        "rate": "how fast, in Hz (default: %(default)r)",
        "name": "default: %(default)r",
        "count": "items per batch (default: %(default)r)",
    }
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=0.5, help=helps["rate"])
    assert "how fast, in Hz (default: 0.5)" in parser.format_help()
    # the DoA scripts' flags all say what they set
    for config in (DoaTrainConfig, EvalConfig):
        assert not [name for name, text in field_help(config).items() if text.startswith("default")], config


def test_only_dotted_key_value_items_of_a_list_option_are_taken_for_swallowed_overrides(capsys) -> None:
    import argparse

    from asgf_nav.cli import list_item, positive_int

    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=list_item(), nargs="+")
    parser.add_argument("--sizes", type=list_item(positive_int), nargs="+")
    parser.add_argument("--splits", type=list_item(), nargs="+", choices=["train", "test"])
    parser.add_argument("overrides", nargs="*")
    assert parser.parse_args(["--labels", "asgf seed=1", "a=b"]).labels == ["asgf seed=1", "a=b"]  # labels
    assert parser.parse_args(["--sizes", "8", "16"]).sizes == [8, 16]
    for argv, flag in (
        (["--labels", "oracle", "ppo.lr=1e-4"], "--labels"),
        (["--sizes", "8", "ppo.lr=1e-4"], "--sizes"),  # typed items: not "invalid positive_int value"
        (["--splits", "train", "ppo.lr=1e-4"], "--splits"),  # choices: not "invalid choice"
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert f"argument {flag}: 'ppo.lr=1e-4' looks like a config override" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--sizes", "x"])
    assert "invalid positive_int value: 'x'" in capsys.readouterr().err  # other refusals keep their wording


def test_a_copied_runs_config_does_not_resume_the_run_it_was_copied_from(tmp_path: Path, capsys) -> None:
    """``--config COPY/config.yaml --resume`` would continue (and write to) the original run named inside the
    file, or start afresh where a moved run's directory is gone; it is refused unless train.run_dir is given."""
    import argparse

    from asgf_nav.cli import add_config_arguments, check_config_beside_its_run, config_from_args
    from asgf_nav.config import load_config, save_config

    original, copy = tmp_path / "run1", tmp_path / "run1_copy"
    for run in (original, copy):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "ckpt_000001.pt").write_bytes(b"")
        save_config(load_config("tiny_heard", [f"train.run_dir={original}"]), run / "config.yaml")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)

    def check(*argv: str) -> None:
        args = parser.parse_args(list(argv))
        check_config_beside_its_run(args, config_from_args(args))

    check("--config", str(original / "config.yaml"))  # the run's own file, in its own directory
    check("--config", str(copy / "config.yaml"), f"train.run_dir={copy}")
    with pytest.raises(SystemExit) as refused:
        check("--config", str(copy / "config.yaml"))
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert f"belongs to the run in {copy}, but its train.run_dir is {original}" in err
    assert f"add train.run_dir={copy} to continue it there" in err
    save_config(load_config("tiny_heard", ["train.run_dir=runs/c"]), copy / "config.yaml")  # as packaged: relative
    with pytest.raises(SystemExit):
        check("--config", str(copy / "config.yaml"))  # run from another directory: not copied, but refused too
    assert f"its train.run_dir is runs/c (relative to this directory, {Path.cwd()})" in capsys.readouterr().err
    (copy / "checkpoints" / "ckpt_000001.pt").unlink()  # no run there: the file is a config like any other
    check("--config", str(copy / "config.yaml"))


def test_user_path_expands_a_leading_tilde_only(monkeypatch, tmp_path):
    import argparse

    from asgf_nav.cli import add_config_arguments, number_type, user_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/runs/x.pt") == f"{tmp_path}/runs/x.pt"
    assert user_path("~") == str(tmp_path)
    for unchanged in ("replica_unheard.yaml", "tiny_heard", "none", "auto", "", "runs/~x", "/abs/path"):
        assert user_path(unchanged) == unchanged
    assert number_type(str, "out", (), (), ("out",)) is user_path
    assert number_type(str, "model", (), (), ("out",)) is str
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, default="replica_unheard.yaml")
    assert parser.parse_args(["--config=~/c.yaml"]).config == f"{tmp_path}/c.yaml"
    assert parser.parse_args([]).config == "replica_unheard.yaml"
    assert "(default: replica_unheard.yaml)" in " ".join(parser.format_help().split())


def test_each_user_error_keeps_its_builtin_base_for_callers_that_catch_that():
    """run_script catches them as UserInputError; code that caught ValueError, OSError or KeyError still does."""
    from asgf_nav.errors import UserInputError

    builtin = {ConfigError: ValueError, WriteError: OSError, UnknownSceneError: KeyError, SceneStoreError: RuntimeError}
    for error in USER_ERRORS:
        assert isinstance(error, UserInputError)
    for kind, base in builtin.items():
        assert issubclass(kind, base)
    full = WriteError("cannot write x.pt: no space left on device", 28)
    assert full.errno == 28 and str(full) == "cannot write x.pt: no space left on device"


CLOSED_CONSOLE = r"""
import logging, pathlib, sys, time
from tqdm import tqdm
from asgf_nav.cli import run_script
from asgf_nav.logging_utils import setup_logging

go, done = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

def main():
    setup_logging("INFO")
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.02)
    for i in range(200):  # enough to fill what is left of the pipes' buffers
        logging.getLogger("run").info("update %d", i)
        print("out", i, flush=True)
    for _ in tqdm(range(50), mininterval=0):
        pass
    done.write_text("the run went on")
    return 0

run_script(main)
"""


def test_a_script_goes_on_when_the_pipe_its_console_writes_into_closes(tmp_path):
    """`train_ppo.py ... | tee log` whose tee is killed, or `| head`: the next write raised BrokenPipeError, which
    ended a days-long run at its next progress-bar redraw."""
    go, done = tmp_path / "go", tmp_path / "done"
    child = subprocess.Popen(
        [sys.executable, "-c", CLOSED_CONSOLE, str(go), str(done)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert child.stdout.readline() == b"ready\n"
    child.stdout.close(), child.stderr.close()  # fmt: skip
    go.write_text("")
    assert child.wait(timeout=120) == 0 and done.read_text() == "the run went on"


def test_bars_drawn_into_a_file_are_redrawn_once_a_minute(monkeypatch):
    import io

    from asgf_nav.logging_utils import FILE_BAR_SECONDS, bar_pacing

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bar_pacing() == {"mininterval": 0.1} and bar_pacing(5) == {"mininterval": 5}
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    for pacing in (bar_pacing(), bar_pacing(5)):
        assert pacing["mininterval"] == pacing["maxinterval"] == FILE_BAR_SECONDS
        assert pacing["file"].stream is sys.stderr


def test_a_bar_in_a_file_draws_each_redraw_and_each_log_line_on_a_line_of_its_own(monkeypatch):
    """In a log file the bar's carriage returns ran its redraws and the next log line together on one line."""
    import io
    import logging

    from tqdm.auto import tqdm

    from asgf_nav.logging_utils import TqdmHandler, bar_pacing

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("bar_lines_test")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    pacing = {**bar_pacing(), "mininterval": 0, "maxinterval": 0}  # every update drawn
    with tqdm(total=3, desc="baking", **pacing) as bar:
        bar.update(1)
        logger.info("scene one written")
        bar.update(2)
    logger.removeHandler(handler)
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == ""
    assert lines.index("scene one written") == 2  # alone on its line, between the bar's redraws
    drawn = [line.split("|")[0] for line in lines if line.startswith("baking")]
    assert drawn[:3] == ["baking:   0%", "baking:  33%", "baking: 100%"] and set(drawn[3:]) <= {"baking: 100%"}


def test_a_script_with_its_standard_output_closed_still_runs(tmp_path):
    """`python scripts/report.py RUNS >&-` dropped its printed table and exited 0; the console wrapper must leave a
    closed stream (None) alone, not fail on it."""
    import os

    code = "from asgf_nav.cli import run_script\nrun_script(lambda: print('a table') or 0)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], stdout=None, stderr=subprocess.PIPE, text=True, cwd=REPO,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_script_on_an_ascii_console_prints_what_it_cannot_encode_escaped(tmp_path):
    """Under a C locale without Python's UTF-8 mode the console is ASCII: a printed '±' (evaluation summaries,
    reports) ended the script in a UnicodeEncodeError traceback, and a resumed evaluation crashed at the same
    line every time. A path that is not UTF-8 reaches messages as surrogates; the log file dropped their lines."""
    import os

    code = (
        "import logging, sys\nfrom asgf_nav.cli import run_script\nfrom asgf_nav.logging_utils import setup_logging\n"
        "def main():\n    setup_logging('INFO', sys.argv[1])\n"
        "    logging.getLogger('run').info('data root %s at 90\\u00b0', 'caf\\udce9')\n"
        "    print('SPL 0.41 \\u00b1 0.03')\n"
        "run_script(main)\n"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "train.log")], capture_output=True, env=env, cwd=REPO
    )
    assert done.returncode == 0 and done.stdout == b"SPL 0.41 \\xb1 0.03\n", done.stderr.decode(errors="replace")
    assert "data root caf\\udce9 at 90\u00b0" in (tmp_path / "train.log").read_text(encoding="utf-8")


def test_bars_in_a_notebook_are_drawn_live(monkeypatch):
    """A notebook's output cell is no terminal, but it redraws a bar in place: the trainer's bar and the usual
    pace stay there (a run started with run_training from a notebook showed no progress)."""
    import io
    import types

    from asgf_nav.logging_utils import bar_pacing, live_console

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not live_console()
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert live_console() and bar_pacing() == {"mininterval": 0.1}
