"""The main job end to end on the tiny scene set: bake, train, checkpoint, baked spectrograms, resume;
background scene baking."""

import collections
import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from stopping import stop_when

from asgf_nav.cli import run_script
from asgf_nav.config import load_config
from asgf_nav.scenes.background import ScenePool, quick_start_order
from asgf_nav.scenes.build import build_scenes

REPO = Path(__file__).resolve().parent.parent
FAST_ACOUSTICS = ["acoustics.sources_per_scene=3", "acoustics.rays=300"]
SMALL_RUN = [
    "ppo.num_envs=4", "ppo.num_steps=8", "model.hidden_size=64", "model.fusion_dim=32", "model.fusion_heads=2",
    "model.ase_dim=32", "train.val_interval=1", "train.val_episodes=4", "train.checkpoint_interval=1",
    "train.torch_threads=1",
]  # fmt: skip


def train_command(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "scripts" / "train_ppo.py"), "--config", "tiny_heard.yaml",
        f"scenes.data_root={data_root}", f"train.run_dir={run_dir}", *FAST_ACOUSTICS, *SMALL_RUN, *extra,
    ]  # fmt: skip


def train(data_root: Path, run_dir: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    command = train_command(data_root, run_dir, *extra)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_main_job_bakes_trains_checkpoints_and_resumes(tmp_path, monkeypatch, capsys):
    data_root, run_dir = tmp_path / "data", tmp_path / "run"
    first = train(data_root, run_dir, "ppo.total_frames=32")
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stderr
    assert "dataset: embedded tiny scene set" in log
    assert "baking the first training scene (tiny_apartment)" in log
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "ckpt_000001.pt").exists()
    assert list((run_dir / "tb").iterdir()), "TensorBoard events written"
    # standard error is a pipe here, as under Slurm or nohup: no bar, whose redraws would bury the log; the update
    # lines say how far the run is and how fast it goes
    assert "frame/s" not in log and "train update 1 frames 32 of 32: {" in log and "'fps': " in log
    saved = load_config(str(run_dir / "config.yaml"))
    assert saved.ppo.num_envs == 4 and saved.scenes.source == "embedded"  # auto, as resolved: a resume keeps it

    bake = [
        sys.executable,
        str(REPO / "scripts" / "bake_spectrograms.py"),
        "--config",
        "tiny_heard.yaml",
        "--data-root",
        str(data_root),
        *FAST_ACOUSTICS,
        "--scenes",
        "tiny_apartment",
    ]
    baked = subprocess.run(bake, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert baked.returncode == 0, baked.stderr[-3000:]
    store = data_root / "spectrograms" / "tiny" / "tiny_apartment" / "telephone.npy"
    assert store.exists() and "1 files to bake" in baked.stdout

    resumed = train(data_root, run_dir, "ppo.total_frames=64", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from update 1" in resumed.stderr
    opened = f"spectrogram store {data_root / 'spectrograms'}: 1 file(s) opened and verified so far"
    assert opened in resumed.stderr and "(the latest tiny/tiny_apartment/telephone.npy)" in resumed.stderr  # by the env
    assert "baking the first training scene" not in resumed.stderr  # already baked
    assert (run_dir / "checkpoints" / "ckpt_000002.pt").exists()

    # a resume whose config no longer fits the checkpoints, or whose newest checkpoint is garbage, is named
    # (in this process: the script's own path to one error line, without starting a Python each time)
    import train_ppo

    own_config = f"--config {run_dir / 'config.yaml'} --resume"
    garbage = run_dir / "checkpoints" / "ckpt_000003.pt"
    for extra, messages in (
        ("model.hidden_size=32", ["trained with another config (model.hidden_size: 64 -> 32)", own_config]),
        ("task.sound_split=unheard", ["trained with another config (task.sound_split: 'heard' -> 'unheard')"]),
        ("model.policy=av_nav", ["was trained with policy 'asgf', config asks for 'av_nav'", own_config]),
        (None, [f"checkpoint {garbage} is corrupt or unreadable", "the run also has ckpt_000002.pt"]),
    ):
        if extra is None:
            garbage.write_bytes(b"not a checkpoint")
        argv = train_command(data_root, run_dir, *([extra] if extra else []), "--resume")[1:]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            run_script(train_ppo.main)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: checkpoint") and all(m in last for m in messages), last
        kept = load_config(str(run_dir / "config.yaml"))  # the run's own config, which the message points to
        assert (kept.model.policy, kept.model.hidden_size, kept.ppo.total_frames) == ("asgf", 64, 64)


def test_ddppo_ranks_share_the_training_scenes_and_rank_0_validates_on_all(monkeypatch):
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.rl import distributed
    from asgf_nav.tasks import factory

    built = collections.defaultdict(list)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(  # the val env gets its episodes from this: here the world stands for its scene list
        factory, "load_task_data", lambda cfg, split, scenes: (scenes, [f"{s}:{i}" for s in scenes for i in range(25)])
    )
    monkeypatch.setattr(
        factory,
        "make_env",
        lambda cfg, split, device, seed, scenes=None, world=None, episodes=None, config_path=None: built[split].append(
            scenes or world
        ),
    )
    pool = types.SimpleNamespace(ready=lambda split: ["a", "b", "c", "d"])
    cfg = load_config("tiny_heard")
    for rank in (0, 1):
        make_rank_env(cfg, "train", rank, pool)
    make_rank_env(cfg, "val", 0, pool)  # only rank 0 validates: best.pt must rest on the whole val split
    assert built == {"train": [["a", "c"], ["b", "d"]], "val": [["a", "b", "c", "d"]]}


def test_scene_pool_grows_in_background_and_stops(tmp_path):
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", *FAST_ACOUSTICS])
    pool = ScenePool(cfg, "tiny", log_file=tmp_path / "build.log")
    assert pool.ready("train") == [] and pool.ready("val") == []
    train_scenes = quick_start_order("tiny", pool.split_scenes("train"))
    build_scenes(cfg, "tiny", [train_scenes[0]], workers=1)
    assert pool.ready("train") == train_scenes[:1]
    assert pool.changed("val") is False  # first call records
    pool.start_background_build(pool.split_scenes("val") + pool.split_scenes("test"))
    group = pool.process.pid
    try:
        deadline = time.monotonic() + 300
        while not pool.ready("val") and time.monotonic() < deadline:
            time.sleep(1)
        assert pool.ready("val") == pool.split_scenes("val")
        assert pool.changed("val") is True and pool.changed("val") is False
    finally:
        pool.stop()
    assert pool.process is None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the builder and its worker processes are all gone
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("background build processes survived ScenePool.stop()")


def test_a_failed_background_build_is_reported_once_with_its_log(tmp_path, monkeypatch, caplog):
    """A builder that exits non-zero (here: one that cannot even start) must not go unnoticed: training would
    stay on its first scene and skip every validation without a word."""
    from asgf_nav.scenes import background

    monkeypatch.setattr(background, "BUILD_MODULE", "asgf_nav.no_such_module")
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path / 'data'}"])
    log = tmp_path / "build_scenes.log"
    ended: list[bool] = []
    pool = ScenePool(cfg, "tiny", log_file=log, on_build_end=lambda: ended.append(True))
    pool.start_background_build(pool.split_scenes("val"))
    try:
        pool.process.wait(timeout=60)
        with caplog.at_level("INFO", logger=background.__name__):
            assert pool.changed("val") is False and pool.changed("val") is False
    finally:
        pool.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors  # once, not at every poll
    assert ended == [True]  # the run is told once that the builder's core is free again
    assert "failed with exit status 1" in errors[0] and str(log) in errors[0] and "tiny_room_val" in errors[0]
    assert pool.exit_status == 1 and "asgf_nav.no_such_module" in log.read_text()


def test_the_runs_torch_threads_take_back_the_builders_core_when_the_build_ends(tmp_path, monkeypatch):
    """While scenes bake in the background training leaves one core to the builder; not for the whole run."""
    import torch

    from asgf_nav import experiment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(experiment, "usable_cpus", lambda: 3)
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "train.torch_threads=0"])
    pool = experiment.scene_pool(cfg, tmp_path / "run")
    before = torch.get_num_threads()
    try:
        experiment.set_torch_threads(cfg, background_build=True)
        assert torch.get_num_threads() == 2
        pool.on_build_end()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_read_only_data_root_lacking_a_stage_is_refused_before_any_bake_starts(tmp_path, monkeypatch):
    """Rank 0 finds a scene it would have to bake on a data root nobody here can write before baking the first
    scene or starting the background build, which would otherwise fail at its first write, later."""
    from asgf_nav import io
    from asgf_nav.experiment import prepare_scenes
    from asgf_nav.scenes import build
    from asgf_nav.scenes.store import SceneStoreError

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}/shared"])
    (tmp_path / "shared" / "scenes" / "tiny").mkdir(parents=True)  # the lab's (empty) share
    monkeypatch.setattr(io.os, "access", lambda path, mode: "shared" not in str(path))
    started = []
    monkeypatch.setattr(build, "build_scenes", lambda *args, **kwargs: started.append(args))
    pool = ScenePool(cfg, "tiny")
    monkeypatch.setattr(pool, "start_background_build", lambda scenes: started.append(scenes))
    first = pool.split_scenes("train")[0]
    with pytest.raises(SceneStoreError, match=rf"scene tiny/{first} lacks stage\(s\) \['layout', .*not writable"):
        prepare_scenes(cfg, pool, is_main=True)
    assert started == []


def test_a_response_too_short_for_any_scene_stops_the_run_before_the_first_bake(tmp_path, monkeypatch):
    """The check runs on every scene's layout up front: baked scene by scene, the smallest scene (baked first)
    passed and the larger ones failed in the background build, leaving the run to train on the small ones."""
    from asgf_nav.config import ConfigError
    from asgf_nav.experiment import prepare_scenes
    from asgf_nav.scenes import build

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "acoustics.max_rir_seconds=0.012"])
    pool = ScenePool(cfg, "tiny")
    started = []
    monkeypatch.setattr(pool, "start_background_build", lambda scenes: started.append(scenes))
    real_build = build.build_scenes
    monkeypatch.setattr(build, "build_scenes", lambda cfg, dataset, names, stages, **kw: (
        real_build(cfg, dataset, names, stages=stages, **kw) if tuple(stages) == ("layout",) else started.append(names)
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=r"'acoustics.max_rir_seconds': 0.012 s is shorter than .* scene tiny_"):
        prepare_scenes(cfg, pool, is_main=True)
    assert started == []  # neither the first scene's bake nor the background build


def test_the_background_builder_is_a_module_of_this_package(tmp_path):
    """An installed wheel has no scripts/ folder: the builder must start from the package alone, and from
    this process's copy of it even when the working directory holds another ``asgf_nav``."""
    from asgf_nav.scenes.background import BUILD_MODULE, run_module_command

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}"])
    command = ScenePool(cfg, "tiny").builder_command(["tiny_room_val"])
    assert command[:3] == run_module_command(BUILD_MODULE) and not any("scripts" in part for part in command)
    impostor = tmp_path / "asgf_nav" / "scenes"
    impostor.mkdir(parents=True)
    for folder in (impostor.parent, impostor):
        (folder / "__init__.py").write_text("")
    (impostor / "build.py").write_text("print('another checkout')\n")
    shown = subprocess.run([*run_module_command(BUILD_MODULE), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0 and "--scenes" in shown.stdout and "another" not in shown.stdout, shown.stderr


CHILD_OF_KILLED_PARENT = """
import sys, time
from asgf_nav.scenes.background import start_child

child = start_child([sys.executable, "-c", "import time; time.sleep(120)"], None)
print(child.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (one nobody has reaped yet is dead all the same)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_background_build_dies_with_its_parent_even_when_killed(tmp_path):
    """A SIGKILL runs no clean-up in the training process; the kernel still ends its background build."""
    script = tmp_path / "parent.py"
    script.write_text(CHILD_OF_KILLED_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert _running(child)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child), "the background child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _running(child):
            os.kill(child, signal.SIGKILL)


def test_torch_threads_follow_the_usable_cores_not_the_machine(monkeypatch):
    """Under taskset or a Slurm allocation the process may use fewer cores than the machine has."""
    import torch

    from asgf_nav import experiment

    monkeypatch.setattr(experiment, "usable_cpus", lambda: 3)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    try:
        cfg = load_config("tiny_heard", ["train.torch_threads=0"])
        experiment.set_torch_threads(cfg, background_build=True)
        assert torch.get_num_threads() == 2  # one core left to the background bake
        experiment.set_torch_threads(cfg, background_build=False)
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's cap wins over the automatic count
        experiment.set_torch_threads(cfg, background_build=False)
        assert torch.get_num_threads() == 1
        experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=2"]), background_build=False)
        assert torch.get_num_threads() == 2  # an explicit count is taken as given
    finally:
        torch.set_num_threads(previous)


def test_an_explicit_torch_thread_count_above_the_cores_is_kept_with_a_warning(monkeypatch, caplog):
    """32 threads on 2 cores made a tiny run about 38 times slower without a word: the count is the user's, but
    the log says what it costs and how to get the cores' share."""
    import torch

    from asgf_nav import experiment

    monkeypatch.setattr(experiment, "usable_cpus", lambda: 2)
    previous = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="asgf_nav.experiment"):
            experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=2"]), background_build=False)
            assert not caplog.records  # within the cores: nothing to say
            experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=3"]), background_build=False)
            three = load_config("tiny_heard", ["train.torch_threads=3"])
            experiment.set_torch_threads(three, background_build=False, warn=False)  # the build's end: said once
        assert torch.get_num_threads() == 3
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            "train.torch_threads=3 is more than the 2 usable core(s) of this process"
        ]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(
    "bad",
    [
        "ppo.num_envs=zero", "task.not_a_key=1", "ppo.lr=[1", "model.policy=asgff", "task.sensors=[depth,sonar]",
        "train.device=gpu0",
    ],
)  # fmt: skip
def test_main_job_rejects_bad_overrides_before_any_work(tmp_path, bad):
    result = train(tmp_path / "data", tmp_path / "run", bad)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert bad.split("=")[0] in result.stderr
    assert not (tmp_path / "data").exists()  # nothing baked
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.sensors=[depth]"], "task.sensors: policy 'asgf' needs ['spectrogram'], got ['depth']"),
        (["model.policy=av_nav", "task.sensors=[]"], "task.sensors: policy 'av_nav' needs ['spectrogram']"),
        (["scenes.image_size=35"], "scenes.image_size: 35 px is too small for the policies' visual CNN (>= 36)"),
        (["task.sensors=[gps]"], "task.sensors: unknown observation 'gps'"),
        (["train.device=tpu9"], "train.device: 'tpu9' is not a torch device"),
        (["task.sensors=[spectrogram,pointgoal]"], "task.sensors: policy 'asgf' does not read ['pointgoal']"),
        (["model.plugins=[no_such_plugin_module]"], "model.plugins: no module 'no_such_plugin_module' (install"),
    ],
)
def test_components_the_config_names_are_checked_before_any_bake(overrides, message):
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import check_components

    check_components(load_config("tiny_heard", ["scenes.image_size=36", "task.sensors=[rgb,depth,spectrogram]"]))
    check_components(load_config("tiny_heard", ["scenes.image_size=8", "task.sensors=[spectrogram]"]))  # blind
    with pytest.raises(ConfigError) as error:
        check_components(load_config("tiny_heard", overrides))
    assert message in str(error.value)


def test_a_spectrogram_store_path_that_does_not_exist_is_warned_about(tmp_path, caplog):
    """A mistyped store path would leave a baked store unused and training several times slower, silently."""
    from asgf_nav.run_checks import check_components

    with caplog.at_level(logging.WARNING, logger="asgf_nav.run_checks"):
        for value in ("auto", "", str(tmp_path)):  # the default, switched off, an existing store
            check_components(load_config("tiny_heard", [f"task.spectrogram_store={value}"]))
        assert caplog.text == ""
        check_components(load_config("tiny_heard", [f"task.spectrogram_store={tmp_path / 'typo'}"]))
    assert f"task.spectrogram_store: {tmp_path / 'typo'} is no directory, so every spectrogram" in caplog.text


def test_a_doa_sensor_and_task_use_doa_are_checked_together(monkeypatch):
    """'doa' is registered by task.use_doa=true, so listing it without the flag names the flag."""
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import check_components
    from asgf_nav.tasks import observations

    monkeypatch.setattr(observations, "_REGISTRY", {k: v for k, v in observations._REGISTRY.items() if k != "doa"})
    with pytest.raises(ConfigError, match=r"^task.sensors: .* lists 'doa'.* only task.use_doa=true provides") as info:
        check_components(load_config("tiny_heard", ["task.sensors=[depth,spectrogram,doa]"]))
    # a run trained with the head lists 'doa' in its config.yaml: the hint drops it for a run without the head
    hinted = str(info.value).split("to go without, add ")[1].split(" to task.use_doa=false")[0]
    assert hinted == "'task.sensors=[depth,spectrogram]'"
    check_components(load_config("tiny_heard", ["task.sensors=[depth,spectrogram,doa]", *shlex.split(hinted)]))
    with pytest.raises(ConfigError, match=r"^task.use_doa=true but the 'doa' observation is not set up"):
        check_components(load_config("tiny_heard", ["task.use_doa=true"]))  # register_auxiliary_observations not run


def test_main_job_names_a_directory_it_cannot_create(tmp_path):
    (tmp_path / "file").write_text("a file where a directory is asked for")
    for key in ("scenes.data_root", "train.run_dir"):
        result = train(tmp_path / "data", tmp_path / "run", f"{key}={tmp_path / 'file' / 'sub'}")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"error: {key}: cannot create directory {tmp_path / 'file' / 'sub'}" in result.stderr
        assert not (tmp_path / "run").exists()  # refused before the run directory is made, claimed or written


def test_a_run_directory_is_never_taken_over_by_accident(tmp_path):
    from asgf_nav.io import exclusive_lock
    from asgf_nav.run_checks import RUN_LOCK

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    previous = {"checkpoints/ckpt_000040.pt": b"a previous run's checkpoint", "config.yaml": b"its config"}
    for name, content in previous.items():
        (run_dir / name).write_bytes(content)
    again = train(tmp_path / "data", run_dir)  # the same command once more, without --resume
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-3000:]
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: train.run_dir: {run_dir} already holds a run (latest checkpoint ckpt_000040.pt)")
    assert "--resume" in last
    assert all((run_dir / name).read_bytes() == content for name, content in previous.items())  # nothing lost
    assert not (tmp_path / "data").exists()  # nothing baked

    fresh = tmp_path / "fresh"
    with exclusive_lock(fresh / RUN_LOCK, "test"):  # another training process is writing there
        busy = train(tmp_path / "data", fresh, timeout=120)  # a lock that waited would hang here
    assert busy.returncode == 2 and "Traceback" not in busy.stderr, busy.stderr[-3000:]
    last = busy.stderr.strip().splitlines()[-1]
    held = f"(it holds {fresh / '.run.lock'})"
    assert last == f"error: train.run_dir: {fresh} is in use by another training process {held}; choose another"
    assert not (fresh / "config.yaml").exists()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_killed_main_job_stops_its_background_build(tmp_path, stop):
    """Stopped the moment the build starts (the earliest and riskiest point), the job takes the build with it."""
    command = [
        sys.executable, "-X", "faulthandler", str(REPO / "scripts" / "train_ppo.py"), "--config", "tiny_heard.yaml",
        f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}", *FAST_ACOUSTICS, *SMALL_RUN,
        "ppo.total_frames=100000",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    builder = None
    output: collections.deque[str] = collections.deque(maxlen=400)
    watchdog = threading.Timer(300, process.kill)  # a job that never starts its build fails the test, not CI
    watchdog.start()
    try:
        for line in process.stderr:
            output.append(line)
            match = re.search(r"in the background \(pid (\d+)", line)
            if match:
                builder = int(match.group(1))
                break
        assert builder is not None, "main job did not start a background build"
        # keep reading: a full stderr pipe would block the job's own exit
        threading.Thread(target=output.extend, args=(process.stderr,), daemon=True).start()
        process.send_signal(stop)
        try:
            returncode = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is stuck
            process.wait(timeout=30)
            time.sleep(1)
            log = "".join(output)
            stuck = log[log.find("Current thread") :] if "Current thread" in log else "(no faulthandler dump)"
            where = f"main thread:\n{stuck[:3000]}\nlog:\n{log[-6000:]}"  # the stuck frame first: a CI log cuts tails
            pytest.fail(f"main job still running 60 s after {stop.name}; {where}")
        # SIGTERM exits through SystemExit(143); Ctrl-C re-raises SIGINT once KeyboardInterrupt unwound
        assert returncode == (128 + stop if stop == signal.SIGTERM else -stop), "".join(output)[-4000:]
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 15  # the job reaps its builder before it exits; its last workers may still be exiting
    while time.monotonic() < deadline:
        try:
            os.killpg(builder, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(builder, signal.SIGKILL)
    pytest.fail("the background build outlived the killed main job")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_stopped_training_saves_its_last_update_and_resumes_there(tmp_path, stop):
    """A stop signal during training loses nothing: the loop ends its update, saves it, and exits as killed."""
    data_root, run_dir = tmp_path / "data", tmp_path / "run"
    command = [
        sys.executable, str(REPO / "scripts" / "train_ppo.py"), "--config", "tiny_heard.yaml",
        f"scenes.data_root={data_root}", f"train.run_dir={run_dir}", *FAST_ACOUSTICS, *SMALL_RUN,
        "ppo.total_frames=100000", "train.checkpoint_interval=1000", "train.val_interval=0", "train.log_interval=1",
    ]  # fmt: skip
    returncode, log = stop_when(command, "train update 2 frames", stop, cwd=REPO)  # it ends the update first
    assert returncode == (128 + stop if stop == signal.SIGTERM else -stop), log[-4000:]
    assert "stopping after this update and saving a checkpoint" in log
    saved = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    assert len(saved) == 1, saved  # no periodic checkpoint was due: this is the stop's own
    update = int(saved[0].stem.split("_")[1])
    assert update >= 2 and f"stopped at update {update};" in log
    assert "Traceback" not in log, log[-4000:]
    if stop == signal.SIGINT:
        assert "interrupted (Ctrl-C)" in log

    resumed = train(data_root, run_dir, f"ppo.total_frames={(update + 1) * 32}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from update {update}" in resumed.stderr
    assert (run_dir / "checkpoints" / f"ckpt_{update + 1:06d}.pt").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_directory_holding_only_a_best_checkpoint_is_not_overwritten(tmp_path, resume):
    """A run killed before its first periodic checkpoint may leave checkpoints/best.pt: neither a new run nor
    --resume (which would start from scratch and replace it at its first validation) may take it over."""
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import claim_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"the best policy of a run killed early")
    with pytest.raises(ConfigError, match=f"^train.run_dir: {run_dir} holds a previous run's best.pt"):
        with claim_run_dir(run_dir, resume):
            pass
    assert (run_dir / "checkpoints" / "best.pt").read_bytes() == b"the best policy of a run killed early"


def test_a_run_called_from_python_leaves_the_callers_state_as_it_was(tmp_path):
    """A notebook runs training, then more code: its config, log handlers and levels, stop handlers, torch
    threads, observation registry and random generators must be those it had, or the next run and its own
    lines behave differently from a fresh process (a later run without task.use_doa must not find the first
    run's DoA head registered; a sweep drawing its settings must not draw the same ones after every run)."""
    import copy
    import logging
    import random

    import numpy as np
    import torch

    from asgf_nav import termination
    from asgf_nav.config import config_to_dict
    from asgf_nav.evaluation import EvaluationRequest, run_evaluation
    from asgf_nav.experiment import run_training
    from asgf_nav.rl.checkpoint import load_checkpoint
    from asgf_nav.tasks.observations import registered_observations

    cfg = load_config(
        "tiny_heard",
        [f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}", *FAST_ACOUSTICS, *SMALL_RUN,
         "ppo.total_frames=32", "train.val_interval=0", "train.torch_threads=1", "task.use_doa=true"],
    )  # fmt: skip
    given, observations = copy.deepcopy(config_to_dict(cfg)), registered_observations()
    assert "doa" not in observations
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigint, threads = signal.getsignal(signal.SIGINT), 2 if torch.get_num_threads() == 1 else 1
    torch.set_num_threads(threads)
    logging.getLogger("matplotlib").setLevel(logging.DEBUG)  # the notebook wants matplotlib's lines
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # fmt: skip
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # fmt: skip
    run_training(cfg)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    assert logging.getLogger("matplotlib").level == logging.DEBUG
    assert (tmp_path / "run" / "checkpoints" / "ckpt_000001.pt").exists()
    assert config_to_dict(cfg) == given  # scenes.source and the like were resolved in the run's own copy
    assert root.handlers == handlers and root.level == level
    assert signal.getsignal(signal.SIGINT) is sigint and not termination.stop_requested()
    assert torch.get_num_threads() == threads
    assert registered_observations() == observations
    logging.getLogger("notebook").warning("a line of the notebook's own")
    assert "a line of the notebook's own" not in (tmp_path / "run" / "train.log").read_text()
    # an evaluation of the run's checkpoint registers its DoA head only while it runs, as the run did
    checkpoint = str(tmp_path / "run" / "checkpoints" / "ckpt_000001.pt")
    build_scenes(cfg, "tiny", ["tiny_room_val"], workers=1)  # the run's end stopped its background bake, maybe early
    request = EvaluationRequest(split="val", checkpoint=checkpoint, episodes=1, num_envs=1, out=str(tmp_path / "eval"))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # fmt: skip
    run_evaluation(request, cfg, load_checkpoint(checkpoint), ["heard"])  # it builds the policy: initial weights
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    assert registered_observations() == observations


@pytest.mark.parametrize("entry", ["checkpoints", "tb", "train.log", "config.yaml"])
def test_a_run_directory_entry_of_the_wrong_kind_is_refused_before_training(tmp_path, entry) -> None:
    """A file where checkpoints/ goes would otherwise surface at the first save, losing the training before it."""
    from asgf_nav.config import ConfigError
    from asgf_nav.experiment import run_training

    run = tmp_path / "run"
    run.mkdir()
    (run / entry).mkdir() if "." in entry else (run / entry).write_text("")
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={run}"])
    with pytest.raises(ConfigError, match=f"^train.run_dir: .*{re.escape(str(run / entry))}[: ]"):
        run_training(cfg)
    assert not (tmp_path / "data").exists()  # refused before any scene is baked


def test_distance_bounds_that_leave_a_scene_no_episode_stop_the_run_before_any_acoustics_bake(tmp_path) -> None:
    """Bounds no val scene can meet once failed only at the first validation, hours in, and the validation
    then pending kept the run from resuming with better ones."""
    from asgf_nav.experiment import run_training
    from asgf_nav.scenes.store import SceneStore
    from asgf_nav.tasks.episodes import EpisodeError

    cfg = load_config(
        "tiny_heard",
        [
            f"scenes.data_root={tmp_path / 'data'}",
            f"train.run_dir={tmp_path / 'run'}",
            "task.min_geodesic_distance=5.5",
        ],
    )
    with pytest.raises(EpisodeError, match=r"min_geodesic_distance=5.5 .*no episode in scene\(s\) tiny_room_val"):
        run_training(cfg)
    scenes = sorted((tmp_path / "data" / "scenes" / "tiny").iterdir())
    assert [d.name for d in scenes] == ["tiny_apartment", "tiny_room_test", "tiny_room_val"]
    assert all(SceneStore(d).has_stage("layout") and not SceneStore(d).has_stage("acoustics") for d in scenes)
    assert not list((tmp_path / "run").rglob("*.pt"))
    # the run's log says why it stopped, in one line as the console does (it would otherwise just end)
    last = (tmp_path / "run" / "train.log").read_text().splitlines()[-1]
    assert " ERROR root: error: " in last and "min_geodesic_distance=5.5" in last


def test_an_error_that_ends_a_run_is_written_to_its_train_log_with_the_traceback(tmp_path, monkeypatch) -> None:
    """A Slurm job's run directory then says what ended it; the console still gets it once, from the script."""
    from asgf_nav import experiment

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(experiment, "prepare_scenes", fail)
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}"])
    with pytest.raises(RuntimeError, match="simulated"):
        experiment.run_training(cfg)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "the run stopped on an error: RuntimeError: CUDA out of memory (simulated)" in log
    assert "Traceback (most recent call last)" in log and ", in fail\n    raise RuntimeError(" in log


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (SystemExit(128 + 15), "WARNING root: terminated (SIGTERM)"),  # a Slurm time limit while the first scene bakes
        (KeyboardInterrupt(), "WARNING root: interrupted (Ctrl-C)"),
        (SystemExit(0), None),  # no stop to report
    ],
)
def test_a_stop_before_training_is_written_to_train_log_as_the_console_says_it(tmp_path, monkeypatch, raised, line):
    from asgf_nav import experiment
    from asgf_nav.logging_utils import logging_scope

    def stop(*args, **kwargs):
        raise raised

    monkeypatch.setattr(experiment, "bake_scenes_and_train", stop)
    with logging_scope(), pytest.raises(type(raised)):  # run_training's scope: the log file is closed after
        experiment.train_in_claimed_run_dir(load_config("tiny_heard"), tmp_path, resume=False, is_main=True)
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[-1].endswith(line) if line else lines == [], lines


def test_under_ddppo_train_log_says_another_rank_may_have_failed_first(tmp_path, monkeypatch) -> None:
    """Rank 0 alone writes train.log; when a peer fails, rank 0 fails on the collective they shared (a gloo
    'Connection reset by peer'), and its log would otherwise send the reader after a network problem."""
    from asgf_nav import experiment
    from asgf_nav.logging_utils import logging_scope
    from asgf_nav.rl import distributed

    def fail(*args, **kwargs):
        raise RuntimeError("[gloo] Connection reset by peer")

    monkeypatch.setattr(experiment, "bake_scenes_and_train", fail)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with logging_scope(), pytest.raises(RuntimeError):
        experiment.train_in_claimed_run_dir(load_config("tiny_heard"), tmp_path, resume=False, is_main=True)
    log = (tmp_path / "train.log").read_text()
    assert "reset by peer (under DD-PPO another rank may have failed first; its error is on the console)" in log


def test_a_config_edited_in_code_is_checked_before_the_run_writes_anything(tmp_path) -> None:
    from asgf_nav.config import ConfigError
    from asgf_nav.experiment import run_training

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}"])
    cfg.ppo.num_envs = 0  # as a notebook may, after load_config checked the file
    with pytest.raises(ConfigError, match="'ppo.num_envs' must be positive, got 0"):
        run_training(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_each_ddppo_rank_draws_its_own_episodes(monkeypatch) -> None:
    import types

    from asgf_nav.config import load_config
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.rl import distributed
    from asgf_nav.tasks import factory

    seeds = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(factory, "make_env", lambda cfg, split, device, seed, **kw: seeds.append(seed))
    cfg = load_config("tiny_heard")
    for rank in (0, 1):
        make_rank_env(cfg, "train", rank, types.SimpleNamespace(ready=lambda split: ["a", "b", "c", "d"]))
    assert seeds == [cfg.train.seed, cfg.train.seed + 1000]


def test_a_training_env_names_the_runs_config_in_a_spectrogram_store_rebake(monkeypatch, tmp_path) -> None:
    """The train and val envs of a run pass its config.yaml down to the spectrogram store, whose re-bake
    command would otherwise name a <config> placeholder."""
    import types

    from asgf_nav.config import load_config
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.tasks import factory

    built = {}
    monkeypatch.setattr(
        factory, "make_env", lambda cfg, split, config_path=None, **kw: built.update({split: config_path})
    )
    monkeypatch.setattr(factory, "load_task_data", lambda cfg, split, scenes: (None, list(range(10_000))))
    cfg = load_config("tiny_heard", [f"train.run_dir={tmp_path / 'run'}"])
    for split in ("train", "val"):
        make_rank_env(cfg, split, 0, types.SimpleNamespace(ready=lambda split: ["a"]))
    assert built == {"train": tmp_path / "run" / "config.yaml", "val": tmp_path / "run" / "config.yaml"}


@pytest.mark.parametrize("ends_on_sigterm", [True, False])
def test_stopping_the_background_builder_kills_it_only_when_sigterm_did_not_end_it(monkeypatch, ends_on_sigterm):
    """ScenePool.stop sends SIGTERM to the builder's group; only a builder still running after the wait
    gets SIGKILL (then it is reaped again); one that ended on SIGTERM gets nothing more."""
    import signal

    from asgf_nav.scenes import background

    sent = []
    monkeypatch.setattr(background, "_signal_group", lambda pid, signum: sent.append((pid, signum)))
    reaps = iter([ends_on_sigterm, True])
    monkeypatch.setattr(background, "_reap", lambda process, seconds: next(reaps))

    class StubbornChild:
        pid = 4242
        returncode = None

        def poll(self):
            return None

    pool = background.ScenePool.__new__(background.ScenePool)
    pool.process = StubbornChild()
    pool.stop()
    expected = [(4242, signal.SIGTERM)] + ([] if ends_on_sigterm else [(4242, signal.SIGKILL)])
    assert sent == expected
    assert pool.process is None


def test_a_run_directory_with_checkpoints_is_continued_only_by_resume(tmp_path: Path, monkeypatch) -> None:
    """A new run is refused a directory holding checkpoints; --resume takes it, best.pt beside them included. Under
    make (MAKELEVEL set) the refusal names the make command, since make takes a bare --resume for itself."""
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import claim_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("ckpt_000002.pt", "ckpt_000003.pt", "best.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"a previous run's")
    monkeypatch.delenv("MAKELEVEL", raising=False)
    with pytest.raises(ConfigError, match=r"already holds a run \(latest checkpoint ckpt_000003.pt\); continue it with "
                       r"--resume, or"):  # fmt: skip
        with claim_run_dir(run_dir, resume=False):
            pass
    monkeypatch.setenv("MAKELEVEL", "1")
    with pytest.raises(ConfigError, match=r"; continue it with make train ARGS=--resume, or choose another"):
        with claim_run_dir(run_dir, resume=False):
            pass
    with claim_run_dir(run_dir, resume=True):  # a run that validated has best.pt: resuming it is the normal case
        pass
    (tmp_path / "new").mkdir()
    with claim_run_dir(tmp_path / "new", resume=False):
        pass


def test_a_run_directory_tensorboard_cannot_name_is_refused_before_any_work(tmp_path: Path) -> None:
    """Under an ASCII file-system encoding (a C locale without UTF-8 mode) a non-ASCII path reaches Python as
    surrogates; TensorBoard's writer then died with a UnicodeEncodeError traceback after the scenes were baked."""
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import claim_run_dir

    run_dir = tmp_path / "donn\udcc3\udca9es"  # 'données' as an ASCII locale decodes its UTF-8 bytes
    with pytest.raises(ConfigError, match=r"train.run_dir: .* is no text under this locale's file-system encoding"):
        with claim_run_dir(run_dir, resume=False):
            pass
    assert not run_dir.exists()


def test_ddppo_ranks_each_train_on_their_own_scene_when_there_are_as_many_as_ranks(monkeypatch) -> None:
    """Two ranks and two baked scenes: one scene each; with fewer scenes than ranks every rank trains on all."""
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.rl import distributed
    from asgf_nav.tasks import factory

    built: list[list[str]] = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(factory, "make_env", lambda cfg, split, device, seed, scenes=None, **kw: built.append(scenes))
    cfg = load_config("tiny_heard")
    for ready in (["a", "b"], ["a"]):
        for rank in (0, 1):
            make_rank_env(cfg, "train", rank, types.SimpleNamespace(ready=lambda split, ready=ready: ready))
    assert built == [["a"], ["b"], ["a"], ["a"]]


def test_the_val_env_holds_train_val_episodes_spaced_over_the_split(monkeypatch) -> None:
    """train.val_episodes=5 of 100 val episodes: indices round(99 k / 4), k = 0..4, i.e. 0, 25, 50, 74, 99."""
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.tasks import factory

    chosen: list[list[int]] = []
    monkeypatch.setattr(factory, "load_task_data", lambda cfg, split, scenes: ("world", list(range(100))))
    monkeypatch.setattr(factory, "make_env", lambda cfg, split, device, seed, episodes, **kw: chosen.append(episodes))
    make_rank_env(load_config("tiny_heard", ["train.val_episodes=5"]), "val", 0)
    assert chosen == [[0, 25, 50, 74, 99]]


def test_a_resume_says_which_settings_of_how_the_run_runs_it_changes(monkeypatch, caplog, tmp_path) -> None:
    """A resume with the packaged config instead of the run's own may move scenes.data_root unasked."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl import checkpoint
    from asgf_nav.run_checks import check_resumed_config

    saved = load_config("tiny_heard", ["scenes.data_root=/big", "train.log_interval=7"])
    state = {"config": config_to_dict(saved), "policy_name": saved.model.policy, **checkpoint.response_versions(saved)}
    monkeypatch.setattr(checkpoint, "load_latest", lambda run_dir, map_location: state)
    with caplog.at_level("WARNING", logger="asgf_nav.run_checks"):
        check_resumed_config(saved, tmp_path)  # the run's own config: nothing to say
        check_resumed_config(load_config("tiny_heard"), tmp_path, is_main=False)  # said once, by rank 0
        assert not caplog.records
        check_resumed_config(load_config("tiny_heard"), tmp_path)
    assert [r.getMessage() for r in caplog.records] == [
        "resuming with other settings than the checkpoint was saved with (allowed: they do not change the "
        "experiment): scenes.data_root: '/big' -> 'data', train.log_interval: 7 -> 1"
    ]


def test_a_val_env_with_fewer_episodes_than_train_val_episodes_says_so(monkeypatch, caplog) -> None:
    """The validation's figures then rest on fewer episodes than the config says: not without a word."""
    import types

    from asgf_nav.experiment import make_rank_env
    from asgf_nav.tasks import factory

    world = types.SimpleNamespace(scenes={"tiny_room_val": None})
    monkeypatch.setattr(factory, "load_task_data", lambda cfg, split, scenes: (world, list(range(20))))
    monkeypatch.setattr(factory, "make_env", lambda cfg, split, device, seed, episodes, **kw: len(episodes))
    with caplog.at_level("WARNING", logger="asgf_nav.experiment"):
        assert make_rank_env(load_config("tiny_heard", ["train.val_episodes=100"]), "val", 0) == 20
        assert make_rank_env(load_config("tiny_heard", ["train.val_episodes=20"]), "val", 0) == 20
    assert [r.getMessage() for r in caplog.records] == [
        "validation runs 20 episodes, not train.val_episodes=100: the 1 val scene(s) ready hold no more (embedded "
        "scenes hold task.val_episodes=20 over the whole val split)"
    ]


def test_torch_threads_are_each_ranks_share_and_ignore_a_zero_omp_num_threads(monkeypatch) -> None:
    """Two DD-PPO ranks on 8 usable cores take 4 threads each (3 beside a background bake); OMP_NUM_THREADS=0
    caps nothing."""
    import torch

    from asgf_nav import experiment
    from asgf_nav.rl import distributed

    monkeypatch.setattr(experiment, "usable_cpus", lambda: 8)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    previous = torch.get_num_threads()
    try:
        cfg = load_config("tiny_heard", ["train.torch_threads=0"])
        experiment.set_torch_threads(cfg, background_build=False)
        assert torch.get_num_threads() == 4
        experiment.set_torch_threads(cfg, background_build=True)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(previous)


def test_torchruns_own_omp_num_threads_1_is_kept_and_named_with_what_to_set(monkeypatch, caplog) -> None:
    """torchrun sets OMP_NUM_THREADS=1 where it is unset, which cannot be told from the user's own 1: the cap holds,
    and rank 0 says once how many cores each rank leaves idle and what to set; an explicit count says nothing."""
    import torch

    from asgf_nav import experiment
    from asgf_nav.rl import distributed

    monkeypatch.setattr(experiment, "usable_cpus", lambda: 16)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previous = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="asgf_nav.experiment"):
            experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=0"]), background_build=False)
            assert torch.get_num_threads() == 1
            warned = [r.getMessage() for r in caplog.records]
            assert len(warned) == 1 and "OMP_NUM_THREADS=1 keeps each rank at 1 torch thread(s)" in warned[0]
            assert "8 usable core(s)" in warned[0] and "export OMP_NUM_THREADS=8 before torchrun" in warned[0]
            caplog.clear()
            experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=1"]), background_build=False)
            monkeypatch.setattr(distributed, "world_size", lambda: 1)  # one process: the user's own cap, said nothing
            experiment.set_torch_threads(load_config("tiny_heard", ["train.torch_threads=0"]), background_build=False)
            assert torch.get_num_threads() == 1 and caplog.records == []
    finally:
        torch.set_num_threads(previous)


def test_bake_workers_threads_stay_under_the_parents_omp_num_threads(monkeypatch) -> None:
    """A worker's BLAS threads are its share of the cores, capped by the user's OMP_NUM_THREADS as training is."""
    from asgf_nav import parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert parallel.worker_threads(2) == 8 and parallel.worker_threads(32) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.worker_threads(2) == 3 and parallel.worker_threads(8) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # no count: caps nothing
    assert parallel.worker_threads(2) == 8


def test_a_single_process_run_ignores_a_stray_local_rank(monkeypatch) -> None:
    """LOCAL_RANK or RANK left in a shell by an earlier torchrun job must not put a plain run on another GPU."""
    from asgf_nav.rl import distributed

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.local_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "8")  # torchrun's variables, before the process group is joined
    assert distributed.local_rank() == 3
    monkeypatch.delenv("LOCAL_RANK")
    assert distributed.local_rank() == 5


def test_task_use_doa_registers_the_head_and_adds_its_sensor_once(monkeypatch) -> None:
    """The DoA head is registered with the configured checkpoint; 'doa' joins task.sensors once; a checkpoint
    that cannot be read is a ConfigError naming task.doa_checkpoint; without task.use_doa nothing is registered."""
    from asgf_nav.config import ConfigError
    from asgf_nav.experiment import register_auxiliary_observations
    from asgf_nav.models.doa import observation
    from asgf_nav.run_checks import check_doa_sensor

    registered: list[tuple[str, int]] = []

    def register(checkpoint: str, cache_size: int) -> None:
        if checkpoint == "missing.pt":
            raise FileNotFoundError("missing.pt: no such file")
        registered.append((checkpoint, cache_size))

    monkeypatch.setattr(observation, "register_doa_observation", register)
    cfg = load_config("tiny_heard", ["task.use_doa=true", "task.doa_checkpoint=head.pt", "task.doa_cache_size=7"])
    sensors = list(cfg.task.sensors)
    register_auxiliary_observations(cfg)
    register_auxiliary_observations(cfg)
    assert registered == [("head.pt", 7)] * 2 and cfg.task.sensors == [*sensors, "doa"]
    cfg.task.doa_checkpoint = "missing.pt"
    with pytest.raises(ConfigError, match="^task.doa_checkpoint: missing.pt: no such file"):
        register_auxiliary_observations(cfg)
    plain = load_config("tiny_heard")
    register_auxiliary_observations(plain)
    assert len(registered) == 2 and "doa" not in plain.task.sensors
    # the head registered by the caller's own code, listed without task.use_doa: the policies would not read it
    with pytest.raises(ConfigError, match="lists 'doa', the DoA head's observation, which only task.use_doa=true"):
        check_doa_sensor(load_config("tiny_heard", ["task.sensors=[depth,spectrogram,doa]"]), ["spectrogram", "doa"])


PLUGIN = """
import numpy as np
import torch
from gymnasium import spaces

from asgf_nav.models import Policy, register_policy
from asgf_nav.models.encoders import AudioEncoder
from asgf_nav.tasks.observations import register_observation


def steps_taken(state):
    return np.array([state.step], np.float32)


register_observation("plugin_steps", steps_taken, lambda world: spaces.Box(0, np.inf, (1,), np.float32))


@register_policy("plugin_audio_gru")
class AudioGRU(Policy):
    required_sensors = ("spectrogram", "plugin_steps")
    reads_sensors = required_sensors

    def __init__(self, cfg, observation_space):
        super().__init__(cfg, observation_space)
        self.audio_encoder = AudioEncoder(self.shapes["spectrogram"], 32)
        self.build_heads(32 + 1)

    def step_features(self, obs):
        return torch.cat([self.audio_encoder(obs["spectrogram"]), obs["plugin_steps"] / 10], dim=-1)
"""


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A researcher's own module defining a policy and an observation, importable as ``nav_plugin``; both
    are unregistered after the test."""
    from asgf_nav.models.policies import POLICY_REGISTRY
    from asgf_nav.tasks import observations

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "nav_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    yield "nav_plugin"
    POLICY_REGISTRY.pop("plugin_audio_gru", None)
    observations._REGISTRY.pop("plugin_steps", None)
    sys.modules.pop("nav_plugin", None)


def test_a_policy_and_observation_of_your_own_train_through_model_plugins(tmp_path, plugin_module) -> None:
    """model.plugins imports the module whose registrations the config names, before anything is checked;
    the run saves it, and the module's observation stays registered after the run (its module stays imported)."""
    import torch

    from asgf_nav.config import ConfigError
    from asgf_nav.experiment import run_training
    from asgf_nav.run_checks import check_components
    from asgf_nav.tasks.observations import registered_observations

    overrides = [
        f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}", *FAST_ACOUSTICS, *SMALL_RUN,
        "ppo.total_frames=32", "train.val_interval=0", "model.policy=plugin_audio_gru",
        "task.sensors=[spectrogram,plugin_steps]",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown policy 'plugin_audio_gru'.*name that module in model.plugins"):
        run_training(load_config("tiny_heard", overrides))
    assert not (tmp_path / "run").exists()
    run_training(load_config("tiny_heard", [*overrides, f"model.plugins=[{plugin_module}]"]))
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "ckpt_000001.pt", weights_only=False)
    assert checkpoint["code"]["package"]  # the code that trained it
    weights = checkpoint["model"]
    assert weights["state_encoder.gru.weight_ih_l0"].shape[1] == 33  # audio 32 + the plugin's observation
    assert f"- {plugin_module}" in (tmp_path / "run" / "config.yaml").read_text()
    assert "plugin_steps" in registered_observations()
    with pytest.raises(ConfigError, match=r"policy 'plugin_audio_gru' does not read \['depth'\]"):
        check_components(load_config("tiny_heard", [*overrides, "task.sensors=[depth,spectrogram,plugin_steps]"]))
    from asgf_nav.experiment import register_auxiliary_observations
    from asgf_nav.tasks.observations import restored_observations

    with_doa = load_config("tiny_heard", [*overrides, f"model.plugins=[{plugin_module}]", "task.use_doa=true"])
    with restored_observations():  # task.use_doa added 'doa', which the user never listed: the fix is the flag
        register_auxiliary_observations(with_doa)
        with pytest.raises(ConfigError, match=r"^task.use_doa: policy 'plugin_audio_gru' does not read the DoA hea"):
            check_components(with_doa)


def test_an_evaluation_that_first_imports_a_plugin_leaves_its_observation_registered(tmp_path, plugin_module) -> None:
    """As a run does: the module stays imported, so providers dropped on the evaluation's way out could never be
    registered again, and a second evaluation (or a run) in the same process (a notebook) refused its sensor."""
    from asgf_nav.evaluation import EvaluationRequest, run_evaluation
    from asgf_nav.experiment import run_training
    from asgf_nav.models.policies import POLICY_REGISTRY
    from asgf_nav.rl.checkpoint import load_checkpoint
    from asgf_nav.tasks import observations

    overrides = [
        f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}", *FAST_ACOUSTICS, *SMALL_RUN,
        "ppo.total_frames=32", "train.val_interval=0", "model.policy=plugin_audio_gru",
        "task.sensors=[spectrogram,plugin_steps]", f"model.plugins=[{plugin_module}]",
    ]  # fmt: skip
    cfg = load_config("tiny_heard", overrides)
    run_training(cfg)
    POLICY_REGISTRY.pop("plugin_audio_gru"), observations._REGISTRY.pop("plugin_steps")  # fmt: skip
    sys.modules.pop(plugin_module)  # as a fresh process finds it: not imported yet
    checkpoint = str(tmp_path / "run" / "checkpoints" / "ckpt_000001.pt")
    for attempt in ("first", "second"):
        out = str(tmp_path / f"eval_{attempt}")
        request = EvaluationRequest(split="train", checkpoint=checkpoint, episodes=1, num_envs=1, out=out)
        run_evaluation(request, cfg, load_checkpoint(checkpoint), ["heard"])
        assert "plugin_steps" in observations.registered_observations()


def test_a_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    from asgf_nav.config import ConfigError
    from asgf_nav.run_checks import check_components

    (tmp_path / "broken_plugin.py").write_text("import not_installed_dependency\n")
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('bad weights file')\n")
    (tmp_path / "prefixed_plugin.py").write_text("import prefixed\n")  # a missing module its name starts with
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "broken_plugin": "model.plugins: importing 'broken_plugin' failed: No module named 'not_installed_dependency'",
        "raising_plugin": "model.plugins: importing 'raising_plugin' failed: RuntimeError: bad weights file",
        "prefixed_plugin": "model.plugins: importing 'prefixed_plugin' failed: No module named 'prefixed'",
    }
    for module, message in cases.items():
        with pytest.raises(ConfigError) as error:
            check_components(load_config("tiny_heard", [f"model.plugins=[{module}]"]))
        assert message in str(error.value)
        sys.modules.pop(module, None)


def test_a_policy_reading_an_observation_the_env_lacks_names_it() -> None:
    from gymnasium import spaces

    from asgf_nav.config import ConfigError, ExperimentConfig
    from asgf_nav.models.policies import Policy

    class ReadsCompass(Policy):
        policy_name = "reads_compass"

        def __init__(self, cfg, observation_space):
            super().__init__(cfg, observation_space)
            self.build_heads(self.shapes["compass"][0])

    space = spaces.Dict({"spectrogram": spaces.Box(0.0, 1.0, (65, 26, 2))})
    with pytest.raises(ConfigError, match=r"policy 'reads_compass' reads observation 'compass', which the env does"):
        ReadsCompass(ExperimentConfig(), space)


def test_soundspaces_val_data_is_checked_before_training_starts(monkeypatch) -> None:
    """On SoundSpaces data nothing bakes, so damaged val data could only surface at the first validation, hours
    in: rank 0 loads the val split up front (its errors name the file), unless validation is switched off."""
    from asgf_nav.experiment import prepare_scenes
    from asgf_nav.tasks import factory
    from asgf_nav.tasks.episodes import EpisodeError

    def damaged(cfg, split, scenes=None):
        raise EpisodeError(f"no episodes: {split}_telephone/content lists none for the chosen scenes")

    monkeypatch.setattr(factory, "load_task_data", damaged)
    cfg = load_config("replica_heard", ["scenes.soundspaces_root=/nonexistent"])
    with pytest.raises(EpisodeError, match="val_telephone"):
        prepare_scenes(cfg, None, is_main=True)
    prepare_scenes(cfg, None, is_main=False)  # only rank 0 validates
    cfg.train.val_interval = 0
    prepare_scenes(cfg, None, is_main=True)


def test_a_sensor_a_policy_requires_counts_as_read(monkeypatch) -> None:
    """A plugin policy that declares pointgoal in required_sensors only (reads_sensors left as the base class's)
    was told to add it to task.sensors, then refused for listing a sensor it does not read: a circle."""
    from asgf_nav.config import ConfigError
    from asgf_nav.models.policies import POLICY_REGISTRY, Policy
    from asgf_nav.run_checks import check_components

    class PointGoalGRU(Policy):
        required_sensors = ("spectrogram", "pointgoal")
        reads_sensors = ("spectrogram",)  # pointgoal named once, where it is required

    monkeypatch.setitem(POLICY_REGISTRY, "pointgoal_gru", PointGoalGRU)
    check_components(load_config("tiny_heard", ["model.policy=pointgoal_gru", "task.sensors=[spectrogram,pointgoal]"]))
    with pytest.raises(ConfigError, match=r"does not read \['depth'\] \(it reads \['spectrogram', 'pointgoal'\]\)"):
        check_components(
            load_config("tiny_heard", ["model.policy=pointgoal_gru", "task.sensors=[spectrogram,pointgoal,depth]"])
        )


def test_a_resume_after_a_version_change_is_refused_before_any_scene_is_baked(tmp_path, monkeypatch, caplog) -> None:
    """The main job refuses to continue a run trained at another acoustics or render version before it bakes a
    scene (a new acoustics version would bake the run's scenes again in place) or touches a checkpoint; a
    checkpoint of an earlier release, which recorded no versions, is resumed with a warning that it cannot tell."""
    import torch

    from asgf_nav.config import config_to_dict
    from asgf_nav.experiment import run_training
    from asgf_nav.rl import checkpoint
    from asgf_nav.run_checks import check_resumed_config

    data_root, run_dir = tmp_path / "data", tmp_path / "run"
    cfg = load_config("tiny_heard", [f"scenes.data_root={data_root}", f"train.run_dir={run_dir}", *SMALL_RUN])
    cfg.scenes.source = "embedded"  # as the run resolved it
    versions = {"acoustics_version": checkpoint.ACOUSTICS_VERSION, "render_version": checkpoint.RENDER_VERSION}
    state = {"model": {"w": torch.zeros(2)}, "optimizer": {}, "update": 2, "frames": 64, "rng": {},
             "config": config_to_dict(cfg), "policy_name": cfg.model.policy, **versions}  # fmt: skip
    saved = checkpoint.save_checkpoint(run_dir, state, keep=0)
    kept = saved.read_bytes()
    for constant in ("ACOUSTICS_VERSION", "RENDER_VERSION"):
        with monkeypatch.context() as updated:
            updated.setattr(checkpoint, constant, getattr(checkpoint, constant) + 1)  # the code was updated
            with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {re.escape(str(saved))} was trained "):
                run_training(cfg, resume=True)
    assert not data_root.exists()  # nothing baked, not even a layout
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == [saved.name] and saved.read_bytes() == kept

    for key in versions:  # as an earlier release wrote it
        del state[key]
    checkpoint.save_checkpoint(run_dir, state, keep=0)
    caplog.clear()  # the saves' INFO lines, where an earlier test set the package's level to INFO

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    with caplog.at_level("WARNING", logger="asgf_nav.run_checks"):
        check_resumed_config(cfg, run_dir, is_main=False)  # said once, by rank 0
        assert not warnings()
        check_resumed_config(cfg, run_dir)
    assert warnings() == [
        f"checkpoint {saved} was written by an earlier release that did not record the acoustics and render "
        "versions it trained on, so it cannot be told whether the responses this code makes (acoustics version "
        f"{versions['acoustics_version']}, render version {versions['render_version']}) are those; a run trained "
        "before an acoustics or render version change goes on with other sound"
    ]


@pytest.mark.parametrize("resume", [False, True])
def test_the_runs_config_is_written_before_its_envs_are_built(monkeypatch, tmp_path, resume) -> None:
    """The envs' spectrogram store names RUN/config.yaml in its re-bake command, and the trainer resets them
    as it is built: a --resume of a run with no checkpoint (nor config.yaml) yet must write it first too."""
    from asgf_nav import experiment
    from asgf_nav.config import load_config
    from asgf_nav.rl import trainer

    run = tmp_path / "run"
    run.mkdir()
    seen = []

    class Stop(Exception):
        pass

    def built(*args, run_dir, **kwargs):
        seen.append((Path(run_dir) / "config.yaml").is_file())
        raise Stop

    monkeypatch.setattr(trainer, "Trainer", built)
    monkeypatch.setattr(experiment, "scene_pool", lambda cfg, run_dir: None)
    monkeypatch.setattr(experiment, "prepare_scenes", lambda cfg, pool, is_main: None)
    cfg = load_config("tiny_heard", [f"train.run_dir={run}", f"scenes.data_root={tmp_path / 'data'}"])
    with contextlib.suppress(Stop), experiment.logging_scope():
        experiment.train_in_claimed_run_dir(cfg, run, resume=resume, is_main=True)
    assert seen == [True]


def test_a_run_records_its_data_root_as_an_absolute_path_and_resumes_on_it_from_anywhere(tmp_path, monkeypatch):
    """A run started with scenes.data_root=data in one directory and resumed from its config.yaml in another
    reads the scenes it was trained on, not a fresh bake into the other directory's data/."""
    from asgf_nav.experiment import run_training
    from asgf_nav.rl.checkpoint import list_checkpoints, load_checkpoint

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()  # fmt: skip
    monkeypatch.chdir(start)
    short = ["scenes.data_root=data", "train.run_dir=run", *FAST_ACOUSTICS, *SMALL_RUN, "train.val_interval=0"]
    run_training(load_config("tiny_heard", [*short, "ppo.total_frames=32"]))
    saved = start / "run" / "config.yaml"
    assert load_config(str(saved)).scenes.data_root == str(start / "data")
    assert load_config(str(saved)).task.spectrogram_store == "auto"  # a word, not a path
    monkeypatch.chdir(elsewhere)
    run_training(load_config(str(saved), [f"train.run_dir={start / 'run'}", "ppo.total_frames=64"]), resume=True)
    assert not (elsewhere / "data").exists()
    newest = list_checkpoints(start / "run")[-1]
    assert load_checkpoint(newest)["update"] == 2
    assert load_checkpoint(newest)["config"]["scenes"]["data_root"] == str(start / "data")
