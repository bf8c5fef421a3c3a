"""Evaluation progress file corruption and config checks."""

import json
import re

import pytest

from asgf_nav.config import ConfigError, load_config
from asgf_nav.eval.evaluator import EpisodeRecord
from asgf_nav.eval.metrics import REPORTED_METRICS
from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress, EvaluationProgressError, evaluation_lock


def _record(i):
    metrics = dict.fromkeys(REPORTED_METRICS, 0.0)
    return EpisodeRecord(str(i), "s", "bell", 0, 0, 1, [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], 1.0, 2, [1, 0], [], metrics)


def test_a_corrupt_line_before_the_last_is_an_error_not_silently_dropped(tmp_path):
    identity = {"agent": "oracle", "seed": 0}
    progress = EvaluationProgress(tmp_path, identity)
    for i in range(3):
        progress.add(_record(i))
    path = tmp_path / PROGRESS_FILE
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:20]  # the second record (file line 3) damaged, the third intact
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvaluationProgressError, match="line 3 is not an episode record"):
        EvaluationProgress(tmp_path, identity)
    # a damaged LAST line is dropped (the run was killed while writing it) and the rest kept
    path.write_text("\n".join(lines[:2] + [lines[3][:20]]) + "\n")
    resumed = EvaluationProgress(tmp_path, identity)
    assert sorted(resumed.done) == [("s", "0")]
    assert len(path.read_text().splitlines()) == 2  # header + the intact record


def test_a_quoted_false_in_a_yaml_file_is_not_read_as_true(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"task": {"use_doa": "false"}}))  # JSON is YAML: "false" is a string
    with pytest.raises(ConfigError, match=r"'task.use_doa' .* expects bool, got 'false' \(str\)"):
        load_config(path)


def test_a_second_evaluation_into_a_directory_in_use_is_refused_at_once(tmp_path):
    """Two processes evaluating into one directory would append the same episodes to one progress file."""
    run = tmp_path / "oracle_tiny_heard_test"
    with evaluation_lock(run):
        with pytest.raises(EvaluationProgressError, match=re.escape(f"another process is evaluating into {run}")):
            with evaluation_lock(run):
                pass
        with evaluation_lock(tmp_path / "other"):  # another directory is free
            pass
    with evaluation_lock(run):  # released at the end of the block
        pass
    (tmp_path / "notes").write_text("notes")
    with pytest.raises(EvaluationProgressError, match="notes is a file, where this evaluation"):
        with evaluation_lock(tmp_path / "notes"):
            pass
    assert (tmp_path / "notes").read_text() == "notes"


def test_a_summary_without_meta_is_named_not_a_key_error(tmp_path):
    """A summary.json in the output directory that lacks 'meta' is an EvaluationProgressError naming the file."""
    (tmp_path / "summary.json").write_text(json.dumps({"episodes": 3, "metrics": {}}))
    with pytest.raises(EvaluationProgressError, match=r"summary\.json is not an evaluation summary"):
        EvaluationProgress(tmp_path, {"agent": "oracle", "seed": 0})
    assert not (tmp_path / PROGRESS_FILE).exists()


def test_a_file_where_the_evaluation_directory_goes_is_named_not_a_traceback(tmp_path):
    (tmp_path / "oracle_tiny_heard_test").write_text("notes")
    with pytest.raises(EvaluationProgressError, match=r"oracle_tiny_heard_test is a file, where this evaluation"):
        EvaluationProgress(tmp_path / "oracle_tiny_heard_test", {"agent": "oracle", "seed": 0})
    assert (tmp_path / "oracle_tiny_heard_test").read_text() == "notes"
