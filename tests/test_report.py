"""report.py across columns: one table's evaluations of embedded scenes heard responses of one acoustics and
render version, which its note names; agents that hear nothing go beside any, earlier releases' included."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from asgf_nav.eval.evaluator import EvaluationFileError
from asgf_nav.eval.report import NON_HEARING_AGENTS, comparison_chart, comparison_table

_VALUES = {"success": 0.5, "spl": 0.25, "sna": 0.125}


def _summary(agent: str, sound_split: str, versions: tuple | None = (3, 4), **meta) -> dict:
    """A summary.json-shaped dict of an evaluation on tiny embedded scenes; ``versions`` (acoustics, render),
    None for a summary of an earlier release that records none."""
    entry = {"mean": 0.5, "low": 0.5, "high": 0.5, "std": 0.1, "count": 10, "level": 0.95}
    recorded = {"agent": agent, "dataset": "tiny", "sound_split": sound_split, "split": "test", "episode_list": "same"}
    recorded |= {"scene_source": "embedded", "checkpoint": None, "audio_model": None, **meta}
    if versions is not None:
        recorded["acoustics_version"], recorded["render_version"] = versions
    name = f"eval/{agent}_tiny_{sound_split}_test"
    return {"meta": recorded, "episodes": 10, "metrics": {m: entry for m in _VALUES}, "directory": name}


def test_a_table_whose_columns_heard_other_render_versions_is_refused_naming_both(tmp_path: Path) -> None:
    """The reviewer's table: heard cells at render version 4, the unheard cell at 5, in one row."""
    heard = _summary("asgf", "heard", (3, 4), checkpoint="run/best.pt")
    follower = _summary("direction_follower", "heard", (3, 4), audio_model={"sha256": "x"})
    unheard = _summary("asgf", "unheard", (3, 5), checkpoint="run/best.pt")
    with pytest.raises(EvaluationFileError) as refused:
        comparison_table([heard, follower, unheard])
    message = str(refused.value)
    assert message.startswith("the evaluations in one table heard responses of different acoustics: ")
    assert "'asgf' on tiny heard (eval/asgf_tiny_heard_test) at acoustics_version 3, render_version 4" in message
    assert "'asgf' on tiny unheard (eval/asgf_tiny_unheard_test) at acoustics_version 3, render_version 5" in message
    with pytest.raises(EvaluationFileError, match="different acoustics"):
        comparison_chart([heard, unheard], tmp_path / "chart.png")  # the chart reads the same cells: refused alike
    earlier = _summary("asgf", "unheard", None, checkpoint="run/best.pt")  # an earlier release's hearing agent
    with pytest.raises(EvaluationFileError, match=r"acoustics_version not recorded \(an earlier release\)"):
        comparison_table([heard, earlier])


def test_the_table_note_names_the_acoustics_versions() -> None:
    table = comparison_table([_summary("asgf", "heard", (3, 4)), _summary("asgf", "unheard", (3, 4))])
    assert "; embedded scenes' responses of acoustics version 3 and render version 4; episodes" in table
    old = comparison_table([_summary("asgf", "heard", None), _summary("asgf", "unheard", None)])
    assert "acoustics and render versions not recorded (an earlier release)" in old
    soundspaces = _summary("asgf", "heard", None, scene_source="soundspaces")
    assert "embedded scenes' responses" not in comparison_table([soundspaces])  # the data's own responses


def test_agents_that_hear_nothing_go_beside_any_versions_earlier_releases_included() -> None:
    heard, unheard = _summary("asgf", "heard", (3, 4)), _summary("asgf", "unheard", (3, 4))
    now = [_summary(agent, "unheard", (None, None)) for agent in NON_HEARING_AGENTS]  # this release's: None
    assert all(f"| {agent} |" in comparison_table([heard, unheard, s]) for agent, s in zip(NON_HEARING_AGENTS, now))
    # an earlier release recorded no versions at all; what it did record tells a random or oracle agent
    earlier = [
        _summary("random", "heard", None, num_envs=8),
        _summary("oracle", "heard", None),
        _summary("random_random_stop", "unheard", None, num_envs=8),
        _summary("blind", "unheard", None, command="python scripts/evaluate.py --agent oracle --name blind"),
        _summary("dice", "unheard", None, num_envs=4),  # --agent random --name dice, its command lost
    ]
    for old in earlier:
        assert f"| {old['meta']['agent']} |" in comparison_table([heard, unheard, old])
        assert "acoustics version 3 and render version 4" in comparison_table([heard, unheard, old])
    # one that hears (an audio model, a checkpoint, a command naming another agent) is not let through
    hearing = [
        _summary("oracle", "heard", None, audio_model={"sha256": "x"}),
        _summary("random", "heard", None, checkpoint="run/best.pt"),
        _summary("random", "heard", None, command="python scripts/evaluate.py --agent=gan --name random"),
    ]
    for old in hearing:
        with pytest.raises(EvaluationFileError, match="not recorded"):
            comparison_table([heard, unheard, old])


def test_the_agents_that_hear_nothing_are_those_an_evaluation_records_no_versions_for() -> None:
    from asgf_nav import evaluation
    from baselines import BASELINES

    deaf = tuple(name for name in BASELINES if not evaluation.hears_audio(evaluation.EvaluationRequest(agent=name)))
    assert sorted(deaf) == sorted(NON_HEARING_AGENTS)
    assert evaluation.BATCH_DRAWN_AGENTS == ("random",)  # the num_envs an earlier random summary is told by


def test_report_script_refuses_mixed_versions_and_its_help_lists_them(tmp_path: Path, capsys) -> None:
    import report

    paths = []
    for summary in (_summary("asgf", "heard", (3, 4)), _summary("asgf", "unheard", (3, 5))):
        directory = tmp_path / Path(summary.pop("directory")).name
        directory.mkdir()
        (directory / "summary.json").write_text(json.dumps(summary))
        paths.append(str(directory))
    with pytest.raises(EvaluationFileError, match=f"{paths[0]}.* at acoustics_version 3, render_version 4"):
        report.main(paths)
    good = copy.deepcopy(json.loads(Path(paths[0], "summary.json").read_text()))
    good["meta"]["sound_split"] = "unheard"
    Path(paths[1], "summary.json").write_text(json.dumps(good))
    assert report.main(paths) == 0
    assert "acoustics version 3 and render version 4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "acoustics and render versions (acoustics_version, render_version" in text
