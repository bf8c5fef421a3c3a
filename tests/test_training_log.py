"""Reading training runs' TensorBoard logs: resumes, windows of frames, the table and the curves script."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.eval.training_log import (
    TrainingLogError,
    read_training_log,
    window_edges,
    window_means,
    window_table,
)

SCRIPT_TAGS = ["train/episode/success", "train/episode/spl", "train/value_loss"]


def write_session(run: Path, steps, value_of, purge_step: int) -> None:
    """One training session's events as the trainer writes them: a SummaryWriter restarting at purge_step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tb"), purge_step=purge_step)
    for step in steps:
        for tag in SCRIPT_TAGS:
            writer.add_scalar(tag, value_of(tag, step), step)
    writer.close()


def fraction(tag: str, step: int) -> float:
    return step / 1000 if tag != "train/value_loss" else 10.0 + step / 100


def test_a_resume_from_an_older_checkpoint_replaces_what_it_repeats(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_session(run, range(100, 1001, 100), lambda tag, step: 1.0, purge_step=1)  # a fresh run to 1000
    write_session(run, range(600, 901, 100), lambda tag, step: 2.0, purge_step=501)  # resumed at 500, killed at 900
    write_session(run, range(400, 1201, 100), lambda tag, step: 3.0, purge_step=301)  # resumed at 300 to the end
    log = read_training_log(run)
    steps, values = log.series("spl")
    assert steps.tolist() == list(range(100, 1201, 100))
    assert values.tolist() == [1.0, 1.0, 1.0] + [3.0] * 9
    assert log.resumed_at == [300]  # after frame 300; the resume after 500 was itself gone back behind
    assert log.last_frame == 1200
    assert set(log.scalars) == set(SCRIPT_TAGS)


def test_a_fresh_run_in_a_dead_runs_directory_is_not_a_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_session(run, range(100, 501, 100), lambda tag, step: 1.0, purge_step=1)
    write_session(run, range(100, 301, 100), lambda tag, step: 5.0, purge_step=1)
    log = read_training_log(run)
    assert log.series("spl")[1].tolist() == [5.0, 5.0, 5.0] and log.resumed_at == []


def test_window_means_take_the_values_logged_inside_each_window() -> None:
    frames = np.array([10, 20, 30, 40, 50, 60])
    values = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    edges = window_edges(60, windows=3)
    assert edges.tolist() == [0, 20, 40, 60]
    assert window_means(frames, values, edges).tolist() == [2.0, 6.0, 10.0]  # (low, high]: 20 is in the first
    by_size = window_edges(60, window_frames=25)
    assert by_size.tolist() == [0, 25, 50, 60]  # the last window is what is left
    assert window_means(frames, values, by_size).tolist() == [2.0, 7.0, 11.0]
    assert math.isnan(window_means(frames, values, np.array([0.0, 5.0, 60.0]))[0])  # nothing logged there
    # a log that begins at step 0 (not the trainer's, which logs from frame 1): the first window holds it
    assert window_means(np.array([0, 1, 2, 3]), np.array([10.0, 1.0, 1.0, 1.0]), window_edges(3, windows=1)) == [3.25]
    for only_step_zero in (window_edges(0, windows=4), window_edges(0, window_frames=10)):
        assert window_means(np.array([0]), np.array([2.0]), only_step_zero).tolist() == [2.0]
    with pytest.raises(ValueError, match="exactly one"):
        window_edges(60, windows=3, window_frames=20)
    with pytest.raises(ValueError, match="at least 1"):
        window_edges(60, windows=0)


def test_the_table_shows_rates_in_percent_and_names_a_missing_or_ambiguous_tag(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_session(run, range(100, 401, 100), fraction, purge_step=1)
    log = read_training_log(run)
    table = window_table(log, ["success", "value_loss"], window_edges(400, windows=2))
    lines = table.splitlines()
    assert lines[0] == "| frames | episode/success % | value_loss |"
    # (0.1 + 0.2) / 2 = 15 %, then (0.3 + 0.4) / 2 = 35 %; value loss (11 + 12) / 2, (13 + 14) / 2
    assert lines[2] == "| 0 - 200 | 15.0 | 11.5 |" and lines[3] == "| 200 - 400 | 35.0 | 13.5 |"
    with pytest.raises(TrainingLogError, match="no scalar 'sna' was logged; it has train/episode/spl"):
        log.series("sna")
    write_session(run, [500], lambda tag, step: 0.0, purge_step=401)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tb"), purge_step=501) as writer:
        writer.add_scalar("val/spl", 0.5, 600)  # a validation, as the trainer logs it
        writer.add_scalar("other/spl", 0.5, 600)
    log = read_training_log(run)
    assert log.resolve_tag("spl") == "train/episode/spl" and log.resolve_tag("val/spl") == "val/spl"
    assert log.resumed_at == [400, 500]
    del log.scalars["train/episode/spl"]
    with pytest.raises(TrainingLogError, match="'spl' is ambiguous: other/spl, val/spl"):
        log.series("spl")


def test_a_directory_without_events_or_a_damaged_event_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainingLogError, match="no such run directory"):
        read_training_log(tmp_path / "missing")
    (tmp_path / "empty" / "tb").mkdir(parents=True)
    with pytest.raises(TrainingLogError, match="empty: no TensorBoard log"):
        read_training_log(tmp_path / "empty")
    run = tmp_path / "run"
    write_session(run, [100, 200], fraction, purge_step=1)
    live = next((run / "tb").iterdir())
    live.write_bytes(live.read_bytes()[:-7])  # a record still being written: read up to it
    log = read_training_log(run)
    assert log.series("spl")[0].tolist() == [100, 200] and np.allclose(log.series("spl")[1], [0.1, 0.2])
    assert log.series("value_loss")[0].tolist() == [100]  # the last value written was cut
    (tmp_path / "foreign" / "tb").mkdir(parents=True)
    (tmp_path / "foreign" / "tb" / "events.out.tfevents.1.host").write_text("not an event file")
    with pytest.raises(TrainingLogError, match="foreign/tb: its event files hold no scalars"):
        read_training_log(tmp_path / "foreign")


def test_the_script_prints_the_table_and_draws_the_curves_of_two_runs(tmp_path: Path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "plot_training", Path(__file__).resolve().parent.parent / "scripts" / "plot_training.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, scale in (("a", 1.0), ("b", 0.5)):
        write_session(tmp_path / name, range(50, 801, 50), lambda tag, step, s=scale: s * fraction(tag, step), 1)
    out, table = tmp_path / "figs" / "curves.png", tmp_path / "curves.md"
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--tags", "success", "value_loss", "--windows", "4"]
    assert script.main([*argv, "--out", str(out), "--table", str(table), "--all-tables"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| frames | episode/success % | value_loss |") == 2 and "a (800 frames)" in printed
    # named by their event directories (RUN/tb) the runs are labelled by the run directories still
    assert script.main([str(tmp_path / "a" / "tb"), str(tmp_path / "b" / "tb"), "--all-tables"]) == 0
    assert "a (800 frames)" in capsys.readouterr().out
    assert table.read_text() == printed.rstrip("\n") + "\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        script.main([*argv, "--labels", "only one"])
    assert "--labels: 1 label(s) for 2 run(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "a"), "--tags", "fps"])
    assert "no scalar 'fps' was logged" in capsys.readouterr().err


def test_tensor_scalars_are_read_and_text_or_histograms_are_not_scalars(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb"), purge_step=1) as writer:
        writer.add_scalar("train/lr", 0.25, 100, new_style=True)  # a tensor summary, as newer writers log
        writer.add_scalar("train/lr", 0.5, 200)
        writer.add_text("notes", "a note", 100)
        writer.add_histogram("weights", np.arange(10.0), 100)
    log = read_training_log(tmp_path)
    assert list(log.scalars) == ["train/lr"]
    assert log.series("lr")[0].tolist() == [100, 200] and log.series("lr")[1].tolist() == [0.25, 0.5]
