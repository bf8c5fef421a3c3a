"""Selective DoA head's training: learning a tiny set, schedule, config errors and the scripts."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from doa_helpers import _tiny_config

from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.network import SelectiveDoaNet
from asgf_nav.models.doa.rooms import shoebox_pool
from asgf_nav.models.doa.train import DoaTrainConfig, angular_metrics, predict, training_loss


@pytest.mark.parametrize("posterior_kind, doa_weight", [("mse", 10.0), ("cross_entropy", 1.0)])
def test_head_learns_on_a_tiny_generated_set(bank, posterior_kind, doa_weight):
    torch.manual_seed(0)
    pool = shoebox_pool(6, 4, seed=3, progress=False)
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25)
    data = sampler.sample(48, 30.0, np.random.default_rng(2))
    net = SelectiveDoaNet(_tiny_config())
    before = angular_metrics(predict(net, data), data.azimuth.numpy())["mae"]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    start = time.monotonic()
    for step in range(150):
        part = data.slice((step % 3) * 16, (step % 3) * 16 + 16)
        loss, _ = training_loss(net, part, doa_weight, posterior_kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and angular_metrics(predict(net, data), data.azimuth.numpy())["mae"] < 30:
            break
        if time.monotonic() - start > 50:
            break
    after = angular_metrics(predict(net, data), data.azimuth.numpy())["mae"]
    assert before > 60  # an untrained head is near chance (90 degrees)
    assert after < 40, f"MAE {before:.1f} -> {after:.1f} degrees"


def test_learning_rate_and_snr_curriculum_follow_the_step():
    from asgf_nav.models.doa.train import learning_rate, snr_lift

    cfg = DoaTrainConfig(lr=1e-3, lr_final_fraction=0.1, max_steps=100, curriculum_db=30.0, curriculum_steps=40)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-4)
    assert learning_rate(cfg, 500) == pytest.approx(1e-4)
    assert snr_lift(cfg, 0) == 30.0 and snr_lift(cfg, 20) == 15.0 and snr_lift(cfg, 40) == 0.0
    assert snr_lift(DoaTrainConfig(curriculum_steps=0), 0) == 0.0


def test_rir_pool_rejects_unknown_rooms_and_scenes_without_a_root(tmp_path):
    from asgf_nav.models.doa.train import rir_pool, train

    with pytest.raises(ValueError, match="rooms must be one of"):
        rir_pool(DoaTrainConfig(rooms="castle", pool_dir=str(tmp_path)), "train", 2, 0)
    with pytest.raises(ValueError, match="needs scenes_root"):
        rir_pool(DoaTrainConfig(rooms="both", pool_dir=str(tmp_path)), "train", 2, 0)
    with pytest.raises(ValueError, match="posterior_loss must be one of"):
        train(DoaTrainConfig(posterior_loss="hinge", pool_dir=str(tmp_path)))


def test_doa_scripts_name_bad_arguments(tmp_path, capsys, monkeypatch):
    import eval_doa
    import pretrain_doa

    blocked = tmp_path / "a_file"  # a file where a directory is needed
    blocked.write_text("")
    cases = [
        (eval_doa.main, ["--selective", str(tmp_path / "nope.pt")], f"--selective: checkpoint {tmp_path / 'nope.pt'}"),
        (eval_doa.main, ["--rooms", "kitchen"], "invalid choice: 'kitchen'"),
        (eval_doa.main, ["--clip-seconds", "2"], "--clip-seconds: 2.0 s is outside (0, 1]"),
        (pretrain_doa.main, ["--model", "transformer"], "invalid choice: 'transformer'"),
        (pretrain_doa.main, ["--targets", "visible"], "invalid choice: 'visible'"),
        # numbers and rooms are checked before any pool is drawn
        (eval_doa.main, ["--rooms", "scenes", "--crnn", "none"], "--scenes-root: --rooms scenes uses baked scenes"),
        (eval_doa.main, ["--examples", "0"], "--examples: must be positive, got 0"),
        (pretrain_doa.main, ["--rooms", "both"], "--scenes-root: --rooms both uses baked scenes"),
        (pretrain_doa.main, ["--train-poses", "0"], "--train-poses: must be positive, got 0"),
        (pretrain_doa.main, ["--curriculum-steps", "-1"], "--curriculum-steps: must be >= 0, got -1"),
        (pretrain_doa.main, ["--snr-low", "5", "--snr-high", "0"], "--snr-low: 5.0 dB is above --snr-high 0.0 dB"),
        # an output that cannot be written is named before the run, not at its last write
        (pretrain_doa.main, ["--out", str(blocked / "head.pt")], f"--out: cannot create directory {blocked}"),
        (
            eval_doa.main,
            ["--crnn", "none", "--out", str(blocked / "t.json")],
            f"--out: cannot create directory {blocked}",
        ),
        (eval_doa.main, ["--crnn", "none", "--out", str(tmp_path)], f"--out: {tmp_path} is a directory"),
    ]
    workdir = tmp_path / "workdir"  # the default --out paths are relative: a refused run must not create them
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
        assert not any(workdir.iterdir()), (argv, list(workdir.rglob("*")))


def test_doa_scripts_name_an_unreadable_or_wrong_checkpoint_before_any_work(tmp_path, capsys, monkeypatch):
    import eval_doa
    import pretrain_doa

    from asgf_nav.cli import run_script

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    crnn = tmp_path / "crnn.pt"
    torch.save({"kind": "crnn", "state_dict": {}}, crnn)
    cases = [
        (eval_doa.main, ["--selective", str(corrupt), "--crnn", "none"], "not readable as a torch checkpoint"),
        (pretrain_doa.main, ["--out", str(corrupt)], "not readable as a torch checkpoint"),
        (pretrain_doa.main, ["--model", "selective", "--out", str(crnn)], "holds a 'crnn' model, not 'selective'"),
    ]
    workdir = tmp_path / "workdir"  # eval_doa's default --out is relative: a refused run must not create it
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for main, argv, message in cases:
        started = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda main=main, argv=argv: main(argv))
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err, argv
        assert err.strip().splitlines()[-1].startswith("error: ") and str(tmp_path) in err, argv
        assert message in err, argv
        assert time.monotonic() - started < 20, argv  # stopped before any RIR pool was drawn
        assert not any(workdir.iterdir()), (argv, list(workdir.rglob("*")))


def test_stopped_pretraining_saves_its_last_step_and_resumes_there(tmp_path):
    """SIGTERM during DoA pretraining: the step ends, is saved, and the same command continues from it."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from stopping import stop_when

    script = Path(__file__).resolve().parent.parent / "scripts" / "pretrain_doa.py"
    out = tmp_path / "crnn.pt"
    command = [
        sys.executable, str(script), "--model", "crnn", "--out", str(out), "--pool-dir", str(tmp_path / "pools"),
        "--train-poses", "4", "--val-poses", "2", "--sources-per-pose", "2", "--batch-size", "4",
        "--clip-seconds", "0.25", "--val-examples", "8", "--val-every", "1", "--checkpoint-every", "1000",
        "--threads", "1", "--max-minutes", "5",
    ]  # fmt: skip
    returncode, log = stop_when([*command, "--max-steps", "100000"], " step 2 loss ", signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, log[-3000:]
    step = int(torch.load(out, weights_only=False)["step"])  # no periodic checkpoint was due: the stop's own
    assert step >= 2 and f"stopped at step {step};" in log, log[-3000:]

    resumed = subprocess.run([*command, "--max-steps", str(step + 1)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed crnn from {out} at step {step}" in resumed.stderr
    assert int(torch.load(out, weights_only=False)["step"]) == step + 1


def test_a_stopped_and_resumed_pretraining_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """The checkpoint holds the example stream's and torch's generators, so the resumed steps draw the same
    examples (and dropout masks) as the uninterrupted run; the packaged head was trained with stops."""
    from asgf_nav.models.doa import train as doa_train

    def config(out: str) -> DoaTrainConfig:
        return DoaTrainConfig(
            model="selective", out=str(tmp_path / out), pool_dir=str(tmp_path / "pools"), train_poses=4,
            val_poses=2, sources_per_pose=2, batch_size=4, clip_seconds=0.25, val_examples=8, val_every=1000,
            checkpoint_every=2, threads=1, max_steps=4,
        )  # fmt: skip

    doa_train.train(config("whole.pt"), progress=False)
    save = doa_train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # stopped right after the step-2 checkpoint

    monkeypatch.setattr(doa_train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        doa_train.train(config("parts.pt"), progress=False)
    monkeypatch.setattr(doa_train, "save_checkpoint", save)
    assert torch.load(tmp_path / "parts.pt", weights_only=False)["step"] == 2
    doa_train.train(config("parts.pt"), progress=False)
    whole, parts = (torch.load(tmp_path / f, weights_only=False)["state_dict"] for f in ("whole.pt", "parts.pt"))
    assert all(torch.equal(whole[name], parts[name]) for name in whole)
