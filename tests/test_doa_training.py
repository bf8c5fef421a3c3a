"""Selective DoA head's training: learning a tiny set, schedule, config errors and the scripts."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from doa_helpers import _tiny_config

from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.crnn import CrnnConfig
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.network import SelectiveDoaNet
from asgf_nav.models.doa.rooms import shoebox_pool
from asgf_nav.models.doa.train import angular_metrics, predict, training_loss


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
    from asgf_nav.models.doa.config import learning_rate
    from asgf_nav.models.doa.train import snr_lift

    cfg = DoaTrainConfig(lr=1e-3, lr_final_fraction=0.1, max_steps=100, curriculum_db=30.0, curriculum_steps=40)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-4)
    assert learning_rate(cfg, 500) == pytest.approx(1e-4)
    assert snr_lift(cfg, 0) == 30.0 and snr_lift(cfg, 20) == 15.0 and snr_lift(cfg, 40) == 0.0
    assert snr_lift(DoaTrainConfig(curriculum_steps=0), 0) == 0.0


def test_rir_pool_rejects_unknown_rooms_and_scenes_without_a_root(tmp_path):
    from asgf_nav.models.doa.pools import rir_pool
    from asgf_nav.models.doa.train import train

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
    crnn = tmp_path / "crnn.pt"
    torch.save({"kind": "crnn", "state_dict": {}}, crnn)
    cases = [
        (eval_doa.main, ["--selective", str(tmp_path / "nope.pt")], f"--selective: checkpoint {tmp_path / 'nope.pt'}"),
        (eval_doa.main, ["--rooms", "kitchen"], "invalid choice: 'kitchen'"),
        (eval_doa.main, ["--clip-seconds", "2"], "--clip-seconds: 2.0 s is outside [0.1, 1]"),
        (pretrain_doa.main, ["--model", "transformer"], "invalid choice: 'transformer'"),
        (pretrain_doa.main, ["--targets", "visible"], "invalid choice: 'visible'"),
        (pretrain_doa.main, ["--mask-target", "early"], "invalid choice: 'early'"),
        (pretrain_doa.main, ["--stft-nfft", "384"], "invalid choice: 384"),
        (pretrain_doa.main, ["--stft-nfft", "256", "--stft-hop", "384"], "--stft-hop: 384 samples is longer than a"),
        (
            pretrain_doa.main,
            ["--init-from", str(tmp_path / "nope.pt")],
            f"--init-from: DoA checkpoint {tmp_path / 'nope.pt'} does not exist",
        ),
        # numbers and rooms are checked before any pool is drawn
        (eval_doa.main, ["--rooms", "scenes", "--crnn", "none"], "--scenes-root: --rooms scenes uses baked scenes"),
        (eval_doa.main, ["--examples", "0"], "--examples: must be positive, got 0"),
        (eval_doa.main, ["--sharpen-weight", "-1"], "--sharpen-weight: must be >= 0, got -1"),
        (eval_doa.main, ["--sharpen-smooth-bins", "-2"], "--sharpen-smooth-bins: must be >= 0, got -2"),
        (pretrain_doa.main, ["--rooms", "both"], "--scenes-root: --rooms both uses baked scenes"),
        (pretrain_doa.main, ["--train-poses", "0"], "--train-poses: must be positive, got 0"),
        (pretrain_doa.main, ["--curriculum-steps", "-1"], "--curriculum-steps: must be >= 0, got -1"),
        (pretrain_doa.main, ["--seed", "-1"], "--seed: must be >= 0, got -1"),  # numpy seeds are >= 0
        (pretrain_doa.main, ["--snr-low", "5", "--snr-high", "0"], "--snr-low: 5.0 dB is above --snr-high 0.0 dB"),
        (pretrain_doa.main, ["--generated-categories", "-3"], "--generated-categories: must be >= 0, got -3"),
        (pretrain_doa.main, ["--generated-instances", "1"], "--generated-instances: 1; a category needs 2"),
        (pretrain_doa.main, ["--generated-share", "1.5"], "--generated-share: 1.5 is not a share in [0, 1]"),
        (
            pretrain_doa.main,
            ["--generated-categories", "5", "--prompt", "category"],
            "--generated-categories needs --prompt audio",
        ),
        # an output that cannot be written is named before the run, not at its last write
        (pretrain_doa.main, ["--out", str(blocked / "head.pt")], f"--out: cannot create directory {blocked}"),
        (
            eval_doa.main,
            ["--crnn", "none", "--out", str(blocked / "t.json")],
            f"--out: cannot create directory {blocked}",
        ),
        (eval_doa.main, ["--crnn", "none", "--out", str(tmp_path)], f"--out: {tmp_path} is a directory"),
        (eval_doa.main, ["--crnn", "none", "--snrs", "0", "nan"], "--snrs: must be a finite number, got nan"),
        (eval_doa.main, ["--crnn", "none", "--snrs", "0", "-5", "0.0"], "--snrs: [0.0, -5.0, 0.0] names a condition"),
        (eval_doa.main, ["--crnn", "none", "--snrs", "-0", "0"], "--snrs: [-0.0, 0.0] names a condition twice"),
        (eval_doa.main, ["--crnn", "none", "--clip-seconds", "0.01"], "--clip-seconds: 0.01 s is outside [0.1, 1]"),
        (eval_doa.main, ["--crnn", "none", "--sharpen-weight", "inf"], "--sharpen-weight: must be a finite number"),
        (pretrain_doa.main, ["--clip-seconds", "0.001"], "--clip-seconds: 0.001 s is outside [0.1, 1]"),
        (pretrain_doa.main, ["--bin-width", "7"], "--bin-width: azimuth bin width must divide 360 degrees, got 7.0"),
        (pretrain_doa.main, ["--model-dim", "50"], "--model-dim: 50 is no multiple of 4, the heads attention splits"),
        (pretrain_doa.main, ["--sources-per-pose", "1"], "--sources-per-pose: 1; a pose needs 2 sources"),
        (pretrain_doa.main, ["--snr-low", "nan"], "--snr-low: must be a finite number, got nan"),
        (pretrain_doa.main, ["--doa-weight", "-1"], "--doa-weight: must be >= 0, got -1"),
        (pretrain_doa.main, ["--lr-final-fraction", "-1"], "--lr-final-fraction: -1.0 is not a fraction of --lr"),
        (
            pretrain_doa.main,
            ["--model", "crnn", "--prompt", "category", "--stft-hop", "128"],
            "--prompt, --stft-hop: set the selective model only; --model crnn does not read them",
        ),
        (
            pretrain_doa.main,
            ["--out", str(tmp_path / "h.pt"), "--export", str(tmp_path / "." / "h.pt")],
            f"--export: {tmp_path / '.' / 'h.pt'} is --out; the weights-only copy would replace",
        ),
        (eval_doa.main, ["--crnn", "none", "--gmm-train-examples", "4"], "--gmm-train-examples: 4 clips cannot fit"),
        (eval_doa.main, ["--scenes-dataset", "nope"], "--scenes-dataset: no scene preset 'nope'; the presets:"),
        (pretrain_doa.main, ["--scenes-dataset", "nope"], "--scenes-dataset: no scene preset 'nope'"),
        (pretrain_doa.main, ["--pool-dir", str(blocked)], f"--pool-dir: {blocked} is a file"),
        (eval_doa.main, ["--crnn", "none", "--pool-dir", str(blocked / "p")], f"--pool-dir: {blocked} is a file"),
        (
            pretrain_doa.main,
            ["--model", "selective", "--init-from", str(crnn)],
            f"--init-from: {crnn} holds a 'crnn' model, not --model selective",
        ),
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


def test_eval_doa_names_a_sharpening_spread_too_wide_for_the_head_by_its_flag(tmp_path, capsys):
    """The spread is checked against the head's bins once it is loaded: a one-line refusal naming the flag and
    the largest that fits, before any pool is rendered, not a ValueError traceback naming an internal field."""
    import eval_doa

    from asgf_nav.cli import run_script
    from asgf_nav.models.doa.observation import DEFAULT_WEIGHTS

    argv = ["--selective", str(DEFAULT_WEIGHTS), "--crnn", "none", "--sharpen-smooth-bins", "40",
            "--pool-dir", str(tmp_path / "pools"), "--out", str(tmp_path / "t.json")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: eval_doa.main(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: --sharpen-smooth-bins 40 does not fit ") and error.endswith("(at most 35)")
    assert not (tmp_path / "pools").exists() and not (tmp_path / "t.json").exists()


def test_doa_scripts_name_an_unreadable_or_wrong_checkpoint_before_any_work(tmp_path, capsys, monkeypatch):
    import eval_doa
    import pretrain_doa

    from asgf_nav.cli import run_script

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    crnn, selective, exported = tmp_path / "crnn.pt", tmp_path / "selective.pt", tmp_path / "exported.pt"
    torch.save({"kind": "crnn", "state_dict": {}}, crnn)
    torch.save({"kind": "selective", "state_dict": {}}, selective)
    torch.save({"kind": "crnn", "state_dict": {}, "optimizer": None, "rng": None}, exported)  # as export_weights
    cases = [
        (eval_doa.main, ["--selective", str(corrupt), "--crnn", "none"], "not readable as a torch checkpoint"),
        (pretrain_doa.main, ["--out", str(corrupt)], "not readable as a torch checkpoint"),
        (pretrain_doa.main, ["--model", "selective", "--out", str(crnn)], "holds a 'crnn' model, not 'selective'"),
        (pretrain_doa.main, ["--model", "crnn", "--out", str(exported)], "holds exported weights only, without the"),
        (eval_doa.main, ["--selective", str(crnn), "--crnn", "none"], "holds a 'crnn' model, not a 'selective' one"),
        (eval_doa.main, ["--selective", "none", "--crnn", str(selective)], "holds a 'selective' model, not a 'crnn'"),
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


def tiny_pretraining_command(tmp_path, out, checkpoint_every: int) -> list[str]:
    """``pretrain_doa.py`` on a few shoebox poses: seconds per step, for the tests that run the script."""
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "pretrain_doa.py"
    return [
        sys.executable, str(script), "--model", "crnn", "--out", str(out), "--pool-dir", str(tmp_path / "pools"),
        "--train-poses", "4", "--val-poses", "2", "--sources-per-pose", "2", "--batch-size", "4",
        "--clip-seconds", "0.25", "--val-examples", "8", "--val-every", "1",
        "--checkpoint-every", str(checkpoint_every), "--threads", "1", "--max-minutes", "5",
    ]  # fmt: skip


def test_stopped_pretraining_saves_its_last_step_and_resumes_there(tmp_path):
    """SIGTERM during DoA pretraining: the step ends, is saved, and the same command continues from it."""
    import signal
    import subprocess

    from stopping import stop_when

    out = tmp_path / "crnn.pt"
    command = tiny_pretraining_command(tmp_path, out, checkpoint_every=1000)
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
    from asgf_nav.models.doa.checkpoint import save_checkpoint as save

    def config(out: str) -> DoaTrainConfig:
        return DoaTrainConfig(
            model="selective", out=str(tmp_path / out), pool_dir=str(tmp_path / "pools"), train_poses=4,
            val_poses=2, sources_per_pose=2, batch_size=4, clip_seconds=0.25, val_examples=8, val_every=1000,
            checkpoint_every=2, threads=1, max_steps=4,
        )  # fmt: skip

    doa_train.train(config("whole.pt"), progress=False)

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # stopped right after the step-2 checkpoint

    monkeypatch.setattr(doa_train, "save_checkpoint", save_then_stop)  # the name the training loop calls
    before, caller_threads = torch.get_num_threads(), 2  # not the run's threads=1
    torch.set_num_threads(caller_threads)  # the run's threads=1 is its own, also when it stops on an error
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)  # so are its seeded generators: the caller's stream goes on where it was
    with pytest.raises(KeyboardInterrupt):
        doa_train.train(config("parts.pt"), progress=False)
    assert torch.get_num_threads() == caller_threads and torch.equal(torch.rand(3), expected)
    torch.set_num_threads(before)
    monkeypatch.setattr(doa_train, "save_checkpoint", save)
    assert torch.load(tmp_path / "parts.pt", weights_only=False)["step"] == 2
    doa_train.train(config("parts.pt"), progress=False)
    whole, parts = (torch.load(tmp_path / f, weights_only=False)["state_dict"] for f in ("whole.pt", "parts.pt"))
    assert all(torch.equal(whole[name], parts[name]) for name in whole)


def _tiny_crnn_run(tmp_path, **changes) -> DoaTrainConfig:
    """A CRNN pretraining of a few steps on a tiny shoebox pool."""
    settings = dict(
        model="crnn", out=str(tmp_path / "crnn.pt"), pool_dir=str(tmp_path / "pools"), train_poses=4, val_poses=2,
        sources_per_pose=2, batch_size=4, clip_seconds=0.25, val_examples=8, val_every=1000, checkpoint_every=1000,
        threads=1, max_steps=2,
    )  # fmt: skip
    return DoaTrainConfig(**(settings | changes))


def test_damage_that_still_unpickles_is_caught_in_a_doa_checkpoint_and_its_export(tmp_path):
    """Every entry has a digest: a resume would otherwise go on from a damaged optimizer moment, and the
    navigation observation would read damaged weights without a word."""
    from asgf_nav.models.doa import train as doa_train
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, export_weights, load_model, read_checkpoint

    cfg = _tiny_crnn_run(tmp_path)
    doa_train.train(cfg, progress=False)
    exported = export_weights(cfg.out, tmp_path / "weights.pt")
    assert read_checkpoint(cfg.out)["step"] == 2 and load_model(exported) is not None
    for path, entry in ((Path(cfg.out), "optimizer"), (exported, "state_dict")):
        saved = torch.load(path, weights_only=False)
        if entry == "optimizer":
            moment = next(iter(saved["optimizer"]["state"].values()))["exp_avg_sq"]
        else:
            moment = next(iter(saved["state_dict"].values()))
        moment.view(-1)[0] += 1.0
        torch.save(saved, tmp_path / "damaged.pt")
        with pytest.raises(DoaCheckpointError, match=rf"is damaged: its entries \['{entry}'\] no longer match"):
            read_checkpoint(tmp_path / "damaged.pt")


def _flags(cfg: DoaTrainConfig) -> list[str]:
    """scripts/pretrain_doa.py's arguments for ``cfg`` (its on/off flags left at their defaults)."""
    from dataclasses import asdict

    return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(cfg).items() if not isinstance(v, bool)]


def test_resumed_pretraining_refuses_changed_settings_and_records_what_it_may_change(tmp_path, capsys, monkeypatch):
    """Re-running the command resumes from --out: one with another --lr or --seed would silently train another
    head and overwrite the record of what it was trained with (the benchmark reads its rooms)."""
    import pretrain_doa

    from asgf_nav.cli import run_script
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError
    from asgf_nav.models.doa.train import train

    first = _tiny_crnn_run(tmp_path)
    train(first, progress=False)
    out = tmp_path / "crnn.pt"
    saved = torch.load(out, weights_only=False)
    with pytest.raises(DoaCheckpointError) as refused:
        train(_tiny_crnn_run(tmp_path, lr=0.5, seed=7, max_steps=4), progress=False)
    message = str(refused.value)
    assert str(out) in message and "--lr: 0.002 -> 0.5" in message and "--seed: 0 -> 7" in message, message
    assert "--max-steps" not in message.split("may change only")[0], message  # resumable: not named as a change
    after = torch.load(out, weights_only=False)
    assert after["step"] == 2 and after["train_config"] == saved["train_config"]  # untouched

    # the script ends with one error line naming the file and the flag
    argv = [*_flags(first), "--rooms=shoebox_pair"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: pretrain_doa.main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: checkpoint {out}") and "--rooms: 'shoebox' -> " in err

    # the resumable settings change, and the checkpoint keeps what they were before
    train(_tiny_crnn_run(tmp_path, max_steps=3, val_every=500), progress=False)
    resumed = torch.load(out, weights_only=False)
    assert resumed["step"] == 3 and resumed["train_config"]["max_steps"] == 3
    assert resumed["train_config_history"] == [{"step": 2, "changed": {"max_steps": [2, 3], "val_every": [1000, 500]}}]

    # a path may change, what the training poses are rendered from may not (another --scenes-root's scenes)
    from asgf_nav.models.doa import train as training

    recorded = resumed["pool_sources"]["shoebox"]
    monkeypatch.setattr(training, "pool_source", lambda cfg, rooms, split: "scenes:0123456789abcdef")
    with pytest.raises(DoaCheckpointError, match=rf"other data \(shoebox: {recorded} -> scenes:0123456789abcdef, "):
        train(_tiny_crnn_run(tmp_path, max_steps=4, val_every=500), progress=False)
    assert torch.load(out, weights_only=False)["step"] == 3


def test_a_resume_on_pools_of_another_renderer_is_refused_before_any_pool_is_rendered(tmp_path, monkeypatch):
    """A renderer change since the checkpoint (here SHOEBOX_POOL_VERSION) is refused before the cached pools are
    rendered again and replaced (minutes and ~100 MB on Replica), naming the versions and advice that works:
    another --out, or --init-from the checkpoint to fine-tune it on the new pools."""
    from asgf_nav.models.doa import pools
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError
    from asgf_nav.models.doa.train import train

    train(_tiny_crnn_run(tmp_path), progress=False)
    out = tmp_path / "crnn.pt"
    version = pools.SHOEBOX_POOL_VERSION
    saved = torch.load(out, weights_only=False)
    assert saved["pool_sources"] == {"shoebox": f"shoebox:{version}"}
    cached = {path: path.read_bytes() for path in (tmp_path / "pools").glob("*.npz")}
    assert len(cached) == 2  # the training and the validation pool

    monkeypatch.setattr(pools, "SHOEBOX_POOL_VERSION", version + 1)
    built = []
    monkeypatch.setattr(pools, "shoebox_pool", lambda *a, **k: built.append(a) or shoebox_pool(*a, **k))
    with pytest.raises(DoaCheckpointError) as refused:
        train(_tiny_crnn_run(tmp_path, max_steps=4), progress=False)
    assert built == [] and {path: path.read_bytes() for path in cached} == cached  # nothing rendered or replaced
    message = str(refused.value)
    assert f"checkpoint {out} was trained on RIR pools rendered from other data" in message, message
    assert f"the shoebox renderer changed (SHOEBOX_POOL_VERSION {version} -> {version + 1})" in message, message
    assert f"--init-from {out} and another --out" in message and "--scenes-root" not in message, message
    assert torch.load(out, weights_only=False)["step"] == 2

    # the advice works: a new --out fine-tuned from the checkpoint on the pools of the new renderer
    tuned = tmp_path / "tuned.pt"
    train(_tiny_crnn_run(tmp_path, out=str(tuned), init_from=str(out), max_steps=1), progress=False)
    after = torch.load(tuned, weights_only=False)
    assert after["pool_sources"] == {"shoebox": f"shoebox:{version + 1}"}
    assert after["pool_versions"] == {"shoebox": version + 1} and len(built) == 2
    assert saved["pool_versions"] == {"shoebox": version}  # recorded: a scenes source does not say it


def test_a_scenes_source_says_whether_the_renderer_or_the_bake_changed(monkeypatch, tmp_path):
    """A scenes pool's source is a digest: matched against the bake at every render version, it tells a
    renderer change (advice: another --out or --init-from) from other scenes (advice: --scenes-root too)."""
    from asgf_nav.acoustics import rir
    from asgf_nav.models.doa import pools
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, check_same_pool_sources
    from asgf_nav.scenes import scene

    metas = {"rays": 3000, "layout_digest": "abc"}
    store = type("FakeStore", (), {"meta": lambda self, stage: dict(metas)})()
    monkeypatch.setattr(scene.Scene, "open", staticmethod(lambda root, dataset, name: type("S", (), {"store": store})))
    monkeypatch.setattr(pools, "split_scene_names", lambda cfg, split: ["tiny_apartment"])
    cfg = DoaTrainConfig(rooms="scenes", scenes_root="DATA", scenes_dataset="tiny")
    version = rir.RENDER_VERSION
    old = pools.pool_source(cfg, "scenes", "train")
    assert pools.source_renderer_version(cfg, "scenes", "train", old) == version
    out = tmp_path / "selective.pt"

    def refusal(recorded_version=None) -> str:
        explain = lambda rooms, before: pools.source_change(cfg, rooms, "train", before, recorded_version)  # noqa: E731
        with pytest.raises(DoaCheckpointError) as refused:
            now = {"scenes": pools.pool_source(cfg, "scenes", "train")}
            check_same_pool_sources({"scenes": old}, now, out, explain)
        return str(refused.value)

    monkeypatch.setattr(rir, "RENDER_VERSION", version + 1)  # the same bake, rendered differently now
    assert pools.source_renderer_version(cfg, "scenes", "train", old) == version
    message = refusal()
    assert f"changed (RENDER_VERSION {version} -> {version + 1})" in message and "--scenes-root" not in message
    assert f"--init-from {out} and another --out" in message, message

    metas["layout_digest"] = "abd"  # and baked again: the digest matches no render version any more
    assert pools.source_renderer_version(cfg, "scenes", "train", old) is None
    message = refusal()
    assert f"match {old} at no RENDER_VERSION up to {version + 1}" in message and "point --scenes-root" in message
    message = refusal(recorded_version=version)  # a checkpoint that recorded its render version tells both
    assert f"changed (RENDER_VERSION {version} -> {version + 1}) and the train scenes' acoustics" in message
    monkeypatch.setattr(rir, "RENDER_VERSION", version)
    assert "renderer changed" not in refusal(recorded_version=version)  # the scenes alone differ


def test_a_second_pretraining_on_the_same_out_is_refused_at_once(tmp_path):
    """Two runs on one --out would both resume from it and overwrite each other's steps."""
    import signal
    import subprocess
    import threading

    out = tmp_path / "crnn.pt"
    command = [*tiny_pretraining_command(tmp_path, out, checkpoint_every=1), "--max-steps", "100000"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(300, first.kill)
    watchdog.start()
    try:
        log = []
        for line in first.stderr:
            log.append(line)
            if " step 1 loss " in line:
                break
        assert first.poll() is None, "".join(log)[-3000:]
        started = time.monotonic()
        # the same command (a few seconds long, so that one let through ends instead of running on)
        second = subprocess.run([*command, "--max-minutes", "0.05"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"error: checkpoint {out} is being written by another training process" in second.stderr
        assert "Traceback" not in second.stderr and "resumed" not in second.stderr
        assert time.monotonic() - started < 60
        first.send_signal(signal.SIGTERM)
        log.extend(first.stderr)
        assert first.wait() == 128 + signal.SIGTERM, "".join(log)[-3000:]
    finally:
        watchdog.cancel()
        if first.poll() is None:
            first.kill()
    stopped = int(torch.load(out, weights_only=False)["step"])
    assert f"stopped at step {stopped};" in "".join(log)


def test_pretraining_removes_temporaries_a_killed_save_of_its_out_left(tmp_path):
    """A save killed outright (SIGKILL, the OOM killer) leaves its temporary; the next run on --out, which holds
    the file's lock, removes it and nothing else."""
    from asgf_nav.models.doa.train import train

    out = tmp_path / "crnn.pt"
    stale = tmp_path / ".crnn.pt.1a2b3c4d.tmp"
    kept = [tmp_path / ".selective.pt.1a2b3c4d.tmp", tmp_path / ".crnn.pt.notatemp.tmp", tmp_path / "crnn.pt.tmp"]
    for path in [stale, *kept]:
        path.write_bytes(b"partial")
    train(_tiny_crnn_run(tmp_path, max_steps=1), progress=False)
    assert out.is_file() and not stale.exists()
    assert all(path.read_bytes() == b"partial" for path in kept)


def test_doa_training_follows_the_cosine_learning_rate(tmp_path: Path) -> None:
    import torch

    from asgf_nav.models.doa.config import DoaTrainConfig, learning_rate
    from asgf_nav.models.doa.train import train

    cfg = DoaTrainConfig(
        model="crnn", out=str(tmp_path / "crnn.pt"), pool_dir=str(tmp_path / "pools"), train_poses=4, val_poses=2,
        sources_per_pose=2, batch_size=4, clip_seconds=0.25, val_examples=8, val_every=1000, checkpoint_every=1000,
        threads=1, max_steps=2,
    )  # fmt: skip
    train(cfg, progress=False)
    lr = torch.load(cfg.out, weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    final = cfg.lr * cfg.lr_final_fraction
    assert lr == pytest.approx(learning_rate(cfg, 1)) == pytest.approx(final + (cfg.lr - final) * 0.5)  # cos(pi/2)


RESUMABLE = {"max_steps", "max_minutes", "checkpoint_every", "val_every", "val_examples", "threads", "device",
             "out", "pool_dir", "scenes_root"}  # fmt: skip


def test_a_resume_refuses_a_change_of_every_setting_that_changes_what_is_learnt() -> None:
    from asgf_nav.models.doa.checkpoint import train_config_changes
    from asgf_nav.models.doa.config import DoaTrainConfig

    base = DoaTrainConfig()
    for f in fields(DoaTrainConfig):
        value = getattr(base, f.name)
        other = (
            (not value) if isinstance(value, bool) else value + 1 if isinstance(value, (int, float)) else f"{value}x"
        )
        saved = asdict(base) | {f.name: other}
        refused = [key for key, _, _ in train_config_changes(saved, base)]
        assert refused == ([] if f.name in RESUMABLE else [f.name]), f.name


class _FixedHead(torch.nn.Module):
    """A stand-in head (72 bins): one-hot at the azimuth carried in each clip's first sample, or uniform."""

    def __init__(self, uniform: bool = False) -> None:
        super().__init__()
        self.cfg = CrnnConfig()
        self.uniform = uniform
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.modes: list[bool] = []  # self.training at each call

    def forward(self, audio: torch.Tensor, prompt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.modes.append(self.training)
        logits = torch.zeros(audio.shape[0], 72) * self.gain
        if not self.uniform:
            bins = torch.round(audio[:, 0, 0].double() / 5.0).long() % 72
            logits[torch.arange(audio.shape[0]), bins] = 50.0
        return {"posterior": torch.softmax(logits, dim=-1), "log_posterior": torch.log_softmax(logits, dim=-1)}


def _labelled_batch(azimuths: list[float]) -> DoaBatch:
    """Clips whose first sample is their target azimuth (what :class:`_FixedHead` answers)."""
    n = len(azimuths)
    mixture = torch.zeros(n, 2, 16)
    mixture[:, 0, 0] = torch.tensor(azimuths)
    return DoaBatch(
        mixture=mixture,
        target=mixture.clone(),
        prompt=torch.zeros(n, 16),
        category=torch.zeros(n, dtype=torch.long),
        azimuth=torch.tensor(azimuths),
        distractor_azimuth=torch.zeros(n),
        line_of_sight=torch.ones(n, dtype=torch.bool),
    )


def test_prediction_runs_every_chunk_in_eval_mode_and_restores_the_training_mode() -> None:
    """predict answers every clip across chunk boundaries and hands the model back in the mode it was in."""
    head, azimuths = _FixedHead(), [0.0, 45.0, 90.0, 180.0, 275.0, 355.0, 10.0]
    head.train()
    from asgf_nav.models.doa.features import circular_distance

    answers = predict(head, _labelled_batch(azimuths), chunk=3)
    assert answers.shape == (7,) and circular_distance(answers, np.array(azimuths)).max() < 1e-6
    assert head.modes == [False, False, False] and head.training  # three chunks of 3, 3 and 1 clips
    head.eval()
    predict(head, _labelled_batch(azimuths[:2]))
    assert not head.training


def test_the_audio_only_loss_is_the_posterior_loss_scaled_by_doa_weight() -> None:
    """A head without a mask (the CRNN) is trained on doa_weight times its posterior loss alone."""
    head = _FixedHead(uniform=True)
    batch = _labelled_batch([30.0, 200.0])
    loss, parts = training_loss(head, batch, 3.0, "cross_entropy")  # uniform over 72 bins: log 72 per clip
    assert loss.item() == pytest.approx(3.0 * np.log(72.0), rel=1e-6)
    assert parts == {"posterior_cross_entropy": pytest.approx(np.log(72.0), rel=1e-6)}


def test_acc5_and_acc20_count_errors_of_exactly_5_and_20_degrees() -> None:
    """Within 5 (20) degrees includes the boundary, and errors wrap around 360."""
    metrics = angular_metrics(np.array([5.0, 20.0, 21.0, 0.0]), np.array([0.0, 0.0, 0.0, 355.0]))
    assert metrics == {"mae": pytest.approx(51.0 / 4), "acc5": 50.0, "acc20": 75.0}


def test_the_snr_lift_ends_at_zero_with_the_curriculum() -> None:
    """After curriculum_steps the training SNRs stay at [snr_low, snr_high] instead of drifting below them."""
    from asgf_nav.models.doa.train import snr_lift

    cfg = DoaTrainConfig(curriculum_db=12.0, curriculum_steps=100)
    assert [snr_lift(cfg, step) for step in (0, 75, 100, 150, 10_000)] == [12.0, 3.0, 0.0, 0.0, 0.0]


def test_fresh_heads_take_their_architecture_from_the_training_settings() -> None:
    """--bin-width, --prompt, --mask-head and --stft-hop reach the model that build_model makes."""
    from asgf_nav.models.doa.build import build_model

    crnn = build_model("crnn", DoaTrainConfig(model="crnn", bin_width=10.0))
    assert crnn.cfg.grid.num_bins == 36 and crnn.head[-1].out_features == 36
    cfg = DoaTrainConfig(prompt="category", mask_head="mlp", bin_width=10.0, patch_dim=16, model_dim=16, stft_hop=128)
    selective = build_model("selective", cfg, ["dog", "phone", "piano"])
    assert selective.cfg.prompt == "category" and selective.cfg.mask_head == "mlp"
    assert selective.cfg.stft.hop == 128 and selective(torch.zeros(1, 2, 8000), torch.zeros(1, dtype=torch.long))[
        "mask"
    ].shape == (1, 63, 256)
    assert selective.cfg.categories == ["dog", "phone", "piano"] and selective.cfg.num_categories == 3
    assert selective.cfg.grid.num_bins == 36 and selective.cfg.model_dim == 16


def test_the_selective_heads_frame_length_scales_its_bins_and_bands() -> None:
    """--stft-nfft 256 halves the bins and keeps each band's width in Hz; bad sizes are refused by name."""
    from asgf_nav.models.doa.build import build_model

    cfg = DoaTrainConfig(patch_dim=16, model_dim=16, stft_nfft=256, stft_hop=64)
    short = build_model("selective", cfg, [])
    assert (short.cfg.stft.n_fft, short.cfg.stft.num_bins, short.cfg.band_widths) == (256, 128, (16, 64))
    out = short(torch.zeros(1, 2, 8000), torch.zeros(1, 8000))
    assert out["mask"].shape == (1, 126, 128) and out["posterior"].shape == (1, 72)
    default = build_model("selective", DoaTrainConfig(patch_dim=16, model_dim=16), [])
    assert (default.cfg.stft.n_fft, default.cfg.stft.num_bins, default.cfg.band_widths) == (512, 256, (32, 128))
    with pytest.raises(ValueError, match="stft_nfft"):
        build_model("selective", DoaTrainConfig(stft_nfft=384), [])
    with pytest.raises(ValueError, match="stft_hop"):
        build_model("selective", DoaTrainConfig(stft_nfft=256, stft_hop=384), [])


def test_a_crnn_checkpoint_loads_back_frozen_with_its_own_config(tmp_path: Path) -> None:
    """load_model rebuilds the saved CRNN config (label width, STFT) and returns it in eval mode, gradients off."""
    from asgf_nav.models.doa.checkpoint import load_model, save_checkpoint
    from asgf_nav.models.doa.crnn import SeldCrnn
    from asgf_nav.models.doa.features import AzimuthGrid, StftConfig

    cfg = CrnnConfig(bin_width=10.0, laplace_scale=8.0, channels=8, rnn_size=8, stft=StftConfig(hop=256))
    model = SeldCrnn(cfg)
    save_checkpoint(tmp_path / "crnn.pt", "crnn", model, None, 0, DoaTrainConfig(model="crnn"), {})
    torch.manual_seed(5)
    draw = torch.rand(1)
    torch.manual_seed(5)
    loaded = load_model(tmp_path / "crnn.pt")  # its initial weights, replaced, are drawn aside from the caller's
    assert torch.equal(torch.rand(1), draw)
    assert loaded.cfg == cfg and loaded.cfg.grid == AzimuthGrid(10.0, 8.0)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    audio = torch.randn(3, 2, 4000)
    model.eval()
    assert torch.allclose(loaded(audio)["posterior"], model(audio)["posterior"], atol=1e-6)


def test_exported_weights_drop_the_optimizer_and_generator_state_only(tmp_path: Path) -> None:
    """export_weights keeps the model, its config and step, and leaves out the optimizer and RNG state."""
    from asgf_nav.models.doa.checkpoint import export_weights, load_model, read_checkpoint, save_checkpoint
    from asgf_nav.models.doa.crnn import SeldCrnn

    model = SeldCrnn(CrnnConfig(channels=8, rnn_size=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 2, 4000))["log_posterior"].sum().backward()
    optimizer.step()
    full = tmp_path / "crnn.pt"
    save_checkpoint(
        full, "crnn", model, optimizer, 7, DoaTrainConfig(model="crnn"), {"mae": 1.0}, np.random.default_rng(0)
    )
    exported = read_checkpoint(export_weights(full, tmp_path / "weights.pt"))
    saved = read_checkpoint(full)
    assert saved["optimizer"] is not None and saved["rng"] is not None
    assert exported["optimizer"] is None and exported["rng"] is None
    assert exported["step"] == 7 and exported["metrics"] == {"mae": 1.0} and exported["config"] == saved["config"]
    assert all(torch.equal(exported["state_dict"][k], v) for k, v in model.state_dict().items())
    assert not load_model(tmp_path / "weights.pt").training


def test_cached_pools_are_kept_apart_by_size_and_rebuilt_without_line_of_sight_flags(tmp_path: Path) -> None:
    """Pools of another pose count are other files; a cached pool saved before the flags is rendered again."""
    from asgf_nav.models.doa.pools import rir_pool
    from asgf_nav.models.doa.rooms import RirPool

    cfg = DoaTrainConfig(rooms="shoebox", pool_dir=str(tmp_path), sources_per_pose=2)
    assert rir_pool(cfg, "train", 2, 5).num_poses == 2
    assert rir_pool(cfg, "train", 3, 5).num_poses == 3
    assert rir_pool(cfg, "train", 2, 5).num_poses == 2
    path = tmp_path / "shoebox_train_2x2_s5.npz"
    old = RirPool.load(path)
    np.savez(path, rirs=old.rirs, azimuth=old.azimuth, sample_rate=old.sample_rate, source=old.source)
    assert RirPool.load(path).line_of_sight is None
    assert rir_pool(cfg, "train", 2, 5).line_of_sight is not None
    assert RirPool.load(path).line_of_sight is not None


def test_each_baked_scene_draws_its_poses_from_its_own_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A split's baked pool asks every scene for an equal share of the poses, with the seed plus the scene's
    index, so the scenes' pose draws are not copies of one another."""
    from types import SimpleNamespace

    from asgf_nav.acoustics import rir
    from asgf_nav.models.doa import pools
    from asgf_nav.scenes.presets import get_preset
    from asgf_nav.scenes.scene import Scene

    asked: list[tuple[str, int, int, int]] = []
    monkeypatch.setattr(Scene, "open", staticmethod(lambda root, dataset, name: SimpleNamespace(name=name, store=name)))
    monkeypatch.setattr(rir, "SceneRirs", lambda store: store)
    monkeypatch.setattr(pools, "scene_pool", lambda scene, rirs, n, k, seed: asked.append((rirs, n, k, seed)))
    monkeypatch.setattr(pools.RirPool, "concat", staticmethod(lambda parts: parts))
    monkeypatch.setattr(
        pools, "split_scene_names", lambda cfg, split: get_preset(cfg.scenes_dataset).split_scenes(split)
    )
    cfg = DoaTrainConfig(rooms="scenes", scenes_root="unused", sources_per_pose=4)
    pools.baked_pool(cfg, "val", 23, seed=100)
    names = get_preset("replica").split_scenes("val")
    assert len(names) == 4 and asked == [(name, 5, 4, 100 + i) for i, name in enumerate(names)]  # 23 // 4 poses each
    asked.clear()  # another renderer of the same draws gets each scene's store
    pools.baked_pool(cfg, "val", 23, seed=100, responses=lambda store: f"direct {store}")
    assert [a[0] for a in asked] == [f"direct {name}" for name in names]


class _MaskedUniformHead(torch.nn.Module):
    """A stand-in selective head: a uniform posterior and a masked spectrogram of silence's compressed magnitude."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = _tiny_config()

    def forward(self, audio: torch.Tensor, prompt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = torch.zeros(audio.shape[0], 72)
        silence = torch.full((1, 1, 1), 1e-6**0.3)  # features.compressed_magnitude clamps |X| at 1e-6, power 0.3
        posterior, log_posterior = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
        return {"masked": silence, "posterior": posterior, "log_posterior": log_posterior}


def test_the_mask_is_trained_to_reconstruct_the_target_not_the_mixture() -> None:
    """With a silent target and a masked output of silence, the reconstruction term is 0 however loud the mixture."""
    batch = _labelled_batch([30.0, 200.0])
    batch.mixture = torch.randn(2, 2, 1024)
    batch.target = torch.zeros(2, 2, 1024)
    loss, parts = training_loss(_MaskedUniformHead(), batch, 2.0, "cross_entropy")
    assert parts["recon"] == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(2.0 * np.log(72.0), rel=1e-6)  # doa_weight x the uniform posterior's loss


class _GainHead(torch.nn.Module):
    """A one-parameter head: logits ``gain`` at 180 degrees (bin 36), 0 elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = CrnnConfig()
        self.gain = torch.nn.Parameter(torch.zeros(()))

    def forward(self, audio: torch.Tensor, prompt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = torch.nn.functional.one_hot(torch.full((audio.shape[0],), 36), 72) * self.gain
        return {"posterior": torch.softmax(logits, -1), "log_posterior": torch.log_softmax(logits, -1)}


class _PlainSgd:
    """Gradient descent at rate 1 (torch.optim's first step imports torch._dynamo, seconds on a busy machine)."""

    def __init__(self, params) -> None:
        self.params = list(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p -= p.grad


def _gain_after_one_step(doa_weight: float, stale_gradient: float | None = None) -> float:
    """The gain after one optimization_step (plain gradient descent, rate 1) on clips labelled 0 degrees."""
    from asgf_nav.models.doa.train import optimization_step

    head = _GainHead()
    if stale_gradient is not None:
        head.gain.grad = torch.tensor(stale_gradient)
    cfg = DoaTrainConfig(doa_weight=doa_weight, posterior_loss="cross_entropy")
    optimization_step(head, _PlainSgd(head.parameters()), _labelled_batch([0.0, 0.0]), cfg)
    return float(head.gain.detach())


def test_an_optimization_step_clips_the_gradient_norm_at_5_and_drops_stale_gradients() -> None:
    """d loss / d gain = doa_weight * (1/72 - p(180)) at gain 0: 138.9 at weight 1e4 moves the gain by exactly 5;
    at weight 36 (~0.5) it moves by the gradient alone, whatever gradient was left on the parameter before."""
    assert _gain_after_one_step(1e4) == pytest.approx(-5.0, rel=1e-6)
    fresh = _gain_after_one_step(36.0)
    assert -5.0 < fresh < 0.0 and fresh == pytest.approx(-0.5, rel=0.01)  # the 0-degree target is ~0 at 180
    assert _gain_after_one_step(36.0, stale_gradient=100.0) == pytest.approx(fresh, rel=1e-6)


def test_training_draws_its_examples_and_validation_clips_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training examples come from the train split and pool with the run's targets, augmentation and SNR range
    raised by the curriculum; the validation clips from the val split and pool, plain, at 0 dB."""
    from asgf_nav.models.doa import train as doa_train

    made: list[tuple[str, int, str, bool, str]] = []
    drawn: list[tuple[str, int, float | tuple[float, float]]] = []

    class Recording(DoaExampleSampler):
        def __init__(self, bank, pool, split: str, *args, **kwargs) -> None:
            super().__init__(bank, pool, split, *args, **kwargs)
            self.split = split
            made.append((split, pool.num_poses, self.targets_kind, self.augment, self.distractor_window))

        def sample(self, batch_size: int, snr_db, rng: np.random.Generator) -> DoaBatch:
            drawn.append((self.split, batch_size, snr_db))
            return super().sample(batch_size, snr_db, rng)

    monkeypatch.setattr(doa_train, "DoaExampleSampler", Recording)
    cfg = _tiny_crnn_run(
        tmp_path, augment=True, targets="line_of_sight", distractor_window="loudest", snr_low=-5.0, snr_high=5.0,
        curriculum_db=8.0, curriculum_steps=4,
    )  # fmt: skip
    doa_train.train(cfg, progress=False)
    assert made == [("train", 4, "line_of_sight", True, "loudest"), ("val", 2, "all", False, "loudest")]
    # the lift: 8 dB at step 0, 8 * (1 - 1/4) = 6 dB at step 1
    assert drawn == [("val", 8, 0.0), ("train", 4, (3.0, 13.0)), ("train", 4, (1.0, 11.0))]
    assert sorted(p.name for p in (tmp_path / "pools").iterdir() if not p.name.startswith(".")) == [  # not locks
        "shoebox_train_4x2_s1000.npz",
        "shoebox_val_2x2_s2000.npz",
    ]


def test_a_pool_of_both_room_kinds_takes_half_its_poses_from_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """rooms=both: shoebox and baked-scene pools of num_poses // 2 poses each, drawn with the same seed (and
    both of their direct paths alone for a direct-path pool)."""
    from asgf_nav.models.doa import pools

    asked: list[tuple[str, str, int, int]] = []  # (rooms, split, poses, seed)
    monkeypatch.setattr(pools, "_cached_pool", lambda cfg, *args: asked.append(args))
    monkeypatch.setattr(pools.RirPool, "concat", staticmethod(lambda parts: parts))
    pools.rir_pool(DoaTrainConfig(rooms="both", scenes_root="unused"), "val", 11, 9)
    pools.rir_pool(DoaTrainConfig(rooms="both", scenes_root="unused"), "train", 4, 1, direct_only=True)
    assert asked == [("shoebox", "val", 5, 9, False), ("scenes", "val", 5, 9, False)] + [
        ("shoebox", "train", 2, 1, True),
        ("scenes", "train", 2, 1, True),
    ]


def test_a_resume_compares_only_the_settings_and_pool_sources_the_checkpoint_recorded(tmp_path: Path) -> None:
    """A setting or room kind added since the checkpoint was written is not refused; a recorded one that changed is,
    and each resume's changes of resumable settings are appended to the earlier ones."""
    from asgf_nav.models.doa.checkpoint import (
        DoaCheckpointError,
        check_resumable,
        check_same_pool_sources,
        train_config_changes,
    )

    cfg = DoaTrainConfig(max_steps=300)
    older = {k: v for k, v in asdict(cfg).items() if k not in ("augment", "distractor_window")}
    assert train_config_changes(older, cfg) == []
    assert train_config_changes(older | {"lr": 0.5}, cfg) == [("lr", 0.5, cfg.lr)]
    crnn = DoaTrainConfig(model="crnn")  # a CRNN recorded with a setting it never read resumes without it
    assert train_config_changes(asdict(crnn) | {"stft_hop": 128, "prompt": "category"}, crnn) == []
    out = tmp_path / "selective.pt"
    check_same_pool_sources({}, {"shoebox": "shoebox:1"}, out)  # recorded none
    check_same_pool_sources({"shoebox": "shoebox:1"}, {"shoebox": "shoebox:1", "scenes": "scenes:ab"}, out)
    with pytest.raises(DoaCheckpointError, match="shoebox: shoebox:1 -> shoebox:2"):
        check_same_pool_sources({"shoebox": "shoebox:1"}, {"shoebox": "shoebox:2"}, out)
    earlier = {"step": 100, "changed": {"max_steps": [100, 200]}}
    resumed = {"kind": "selective", "step": 200, "train_config": asdict(cfg) | {"max_steps": 200},
               "train_config_history": [earlier]}  # fmt: skip
    assert check_resumable(resumed, cfg, out) == [earlier, {"step": 200, "changed": {"max_steps": [200, 300]}}]


def _tiny_selective_run(tmp_path: Path, out: str, **changes) -> DoaTrainConfig:
    """The same pretraining for the selective head, into ``tmp_path / out``."""
    return _tiny_crnn_run(tmp_path, model="selective", out=str(tmp_path / out), **changes)


def test_a_direct_mask_target_trains_on_a_direct_path_pool_of_the_training_poses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mask_target=direct: the training sampler renders the mask's target through a second, cached pool of
    the same poses holding their direct paths alone; validation is unchanged. The CRNN has no mask."""
    from asgf_nav.models.doa import train as doa_train
    from asgf_nav.models.doa.rooms import RirPool

    given: list[RirPool | None] = []

    class Recording(DoaExampleSampler):
        def __init__(self, *args, mask_pool: RirPool | None = None, **kwargs) -> None:
            super().__init__(*args, mask_pool=mask_pool, **kwargs)
            given.append(mask_pool)

    monkeypatch.setattr(doa_train, "DoaExampleSampler", Recording)
    doa_train.train(_tiny_selective_run(tmp_path, "direct.pt", mask_target="direct"), progress=False)
    train_mask, val_mask = given
    assert val_mask is None
    expected = shoebox_pool(4, 2, seed=1000, progress=False, direct_only=True)
    np.testing.assert_array_equal(train_mask.rirs, expected.rirs)
    assert train_mask.source.endswith("_direct")
    assert sorted(p.name for p in (tmp_path / "pools").iterdir() if not p.name.startswith(".")) == [  # not locks
        "shoebox_train_4x2_s1000.npz",
        "shoebox_train_4x2_s1000_direct.npz",
        "shoebox_val_2x2_s2000.npz",
    ]
    with pytest.raises(ValueError, match="mask_target set the selective model only; the crnn does not read"):
        doa_train.train(_tiny_crnn_run(tmp_path, mask_target="direct"), progress=False)
    with pytest.raises(ValueError, match="mask_target must be one of"):
        doa_train.train(_tiny_selective_run(tmp_path, "x.pt", mask_target="early"), progress=False)


def test_init_from_starts_a_new_run_from_another_checkpoints_weights(tmp_path: Path) -> None:
    """Fine-tuning: a new --out starts at step 0 from --init-from's weights (a near-zero learning rate keeps
    them); another model kind, a missing file or another architecture are refused by name."""
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError
    from asgf_nav.models.doa.train import train

    train(_tiny_selective_run(tmp_path, "base.pt"), progress=False)
    base = torch.load(tmp_path / "base.pt", weights_only=False)
    tuned = _tiny_selective_run(tmp_path, "tuned.pt", init_from=str(tmp_path / "base.pt"), lr=1e-12, max_steps=1)
    train(tuned, progress=False)
    train(_tiny_selective_run(tmp_path, "fresh.pt", lr=1e-12, max_steps=1), progress=False)
    tuned, scratch = (torch.load(tmp_path / f, weights_only=False) for f in ("tuned.pt", "fresh.pt"))
    assert tuned["step"] == 1 and tuned["train_config"]["init_from"] == str(tmp_path / "base.pt")
    learnt = [n for n in base["state_dict"] if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for name in learnt:  # batch norms' running statistics follow the step's batch whatever the rate
        torch.testing.assert_close(tuned["state_dict"][name], base["state_dict"][name], atol=1e-8, rtol=0)
    assert any(not torch.allclose(scratch["state_dict"][n], base["state_dict"][n]) for n in learnt)

    train(_tiny_crnn_run(tmp_path), progress=False)
    with pytest.raises(DoaCheckpointError, match=r"--init-from: .*crnn.pt holds a 'crnn' model, not 'selective'"):
        train(_tiny_selective_run(tmp_path, "a.pt", init_from=str(tmp_path / "crnn.pt")), progress=False)
    with pytest.raises(FileNotFoundError, match=r"--init-from: DoA checkpoint .*missing.pt does not exist"):
        train(_tiny_selective_run(tmp_path, "b.pt", init_from=str(tmp_path / "missing.pt")), progress=False)
    with pytest.raises(DoaCheckpointError, match="--init-from: .*does not fit this configuration"):
        train(_tiny_selective_run(tmp_path, "c.pt", init_from=str(tmp_path / "base.pt"), model_dim=16), progress=False)


def test_the_training_bar_drawn_into_a_log_file_is_not_redrawn_every_step(tmp_path, capsys):
    """Standard error that is a file keeps every redraw: the bar's loss postfix had forced one per step (about
    12 MB an hour of a default run); there it is drawn once a minute, and the log lines stay readable."""
    from asgf_nav.models.doa.train import train

    train(_tiny_crnn_run(tmp_path, max_steps=30), progress=True)  # pytest's capture is no terminal
    drawn = capsys.readouterr().err.count("train crnn DoA")
    assert 1 <= drawn <= 3, drawn  # the first draw and the closing one


def test_a_pretraining_its_time_budget_cut_short_says_so_and_resumes_to_its_end(tmp_path, monkeypatch, caplog):
    """A head stopped by --max-minutes before --max-steps is still high on its learning-rate schedule: the run
    must not end as a finished one does, nor a second stage start from it without a word."""
    import types

    from asgf_nav.models.doa import train as doa_train

    clock = iter(range(0, 10**6, 60))  # a minute passes at every look at the clock
    monkeypatch.setattr(doa_train, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    with caplog.at_level(logging.INFO, logger="asgf_nav.models.doa"):
        doa_train.train(_tiny_crnn_run(tmp_path, max_steps=5, max_minutes=1.5), progress=False)
    cut = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(cut) == 1 and "time budget (--max-minutes 1.5) ended training at step 1 of --max-steps 5" in cut[0]
    assert "the same command with a larger --max-minutes resumes" in cut[0] and "finished" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="asgf_nav.models.doa"):
        doa_train.train(_tiny_crnn_run(tmp_path, out=str(tmp_path / "tuned.pt"), init_from=str(tmp_path / "crnn.pt"),
                                       max_steps=1), progress=False)  # fmt: skip
    assert f"--init-from: {tmp_path / 'crnn.pt'} stopped at step 1 of the 5 its run planned" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="asgf_nav.models.doa"):
        doa_train.train(_tiny_crnn_run(tmp_path, max_steps=5, max_minutes=100), progress=False)  # resumed
    assert "finished crnn at step 5" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
