"""Visualisation: trajectory maps, side-by-side comparisons, episode videos (MP4 with audio, GIF), t-SNE."""

import copy
import dataclasses
import json
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from asgf_nav.config import ExperimentConfig, load_config
from asgf_nav.eval.evaluator import run_episodes
from asgf_nav.scenes.build import build_scenes
from asgf_nav.scenes.scene import Scene
from asgf_nav.scenes.store import SceneStoreError
from asgf_nav.tasks.factory import load_task_data
from asgf_nav.viz.trajectories import shortest_path_nodes
from asgf_nav.viz.tsne import SpatialStates, embed, plot_tsne
from baselines.oracle import OracleAgent
from baselines.random_agent import RandomAgent

# the tiny fixture's cheap acoustics: a script loading its world asks for them too
TINY_ACOUSTICS = ["acoustics.sources_per_scene=4", "acoustics.rays=200", "acoustics.ism_order=1",
                  "acoustics.max_rir_seconds=0.3"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Baked tiny test scene, its world and oracle / random records of the same episodes."""
    root = tmp_path_factory.mktemp("data")
    cfg = load_config(None, TINY_ACOUSTICS)
    cfg.scenes.data_root, cfg.scenes.image_size, cfg.scenes.dataset = str(root), 32, "tiny"
    cfg.task.test_episodes, cfg.task.max_steps = 6, 30
    build_scenes(cfg, "tiny", ["tiny_room_test"], workers=1)
    world, episodes = load_task_data(cfg, "test")
    oracle = run_episodes(OracleAgent(), world, episodes, cfg, num_envs=2, progress=False)
    random = run_episodes(RandomAgent(seed=2), world, episodes, cfg, num_envs=2, progress=False)
    return cfg, Scene.open(root, "tiny", "tiny_room_test"), world, oracle, random


def _ffprobe(path: Path) -> str:
    import imageio_ffmpeg

    return subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr


def _decoded_frames(path: Path) -> int:
    """Video frames ffmpeg decodes from ``path`` (after muxing, so a cut by -shortest shows)."""
    import imageio_ffmpeg

    err = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v", "-f", "null", "-"],
        capture_output=True,
        text=True,
    ).stderr
    counts = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("frame=")]
    return int(counts[-1].split("=")[1].split()[0])


def _write_evaluations(tmp_path: Path, data_root: str | None = None, **runs) -> list[str]:
    """Evaluation directories of the tiny scene's records, as scripts/evaluate.py writes them."""
    from asgf_nav.eval.report import write_evaluation

    meta = {"dataset": "tiny", "sound_split": "unheard", "split": "test", "scene_source": "embedded"}
    if data_root is not None:
        meta["data_root"] = data_root
    for name, records in runs.items():
        write_evaluation(tmp_path / name, records, {"agent": name, **meta})
    return [str(tmp_path / name) for name in runs]


def test_shortest_path_nodes_follow_the_geodesic(tiny):
    _, scene, _, oracle, _ = tiny
    for rec in oracle:
        nodes = shortest_path_nodes(scene, rec.start_node, rec.start_yaw, rec.goal_node)
        assert nodes[0] == rec.start_node and nodes[-1] == rec.goal_node
        assert len(nodes) - 1 == scene.geodesic_hops[rec.start_node, rec.goal_node]
        assert nodes == [n for i, (n, _) in enumerate(rec.path) if i == 0 or n != rec.path[i - 1][0]]


def test_trajectory_map_and_comparison_images(tiny, tmp_path):
    from asgf_nav.viz.trajectories import save_trajectories

    _, scene, _, oracle, random = tiny
    single = save_trajectories(tmp_path / "one.png", scene, [oracle[0]], ["oracle"])
    pair = save_trajectories(tmp_path / "two.png", scene, [oracle[0], random[0]], ["oracle", "random"])
    a, b = imageio.imread(single), imageio.imread(pair)
    assert a.ndim == 3 and b.shape[1] > 1.6 * a.shape[1]
    for img in (a, b):
        rgb = img[..., :3].astype(np.float64)
        assert rgb.std() > 20  # drawn content, not a blank canvas
        # the goal star's red is present
        assert np.any((rgb[..., 0] > 190) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80))
    with pytest.raises(ValueError, match="labels"):
        save_trajectories(tmp_path / "bad.png", scene, [oracle[0]], ["a", "b"])


def test_video_mp4_has_frames_and_audio(tiny, tmp_path):
    from asgf_nav.viz.video import audio_track, write_video

    _, scene, world, oracle, _ = tiny
    rec = max(oracle, key=lambda r: len(r.path))
    path = write_video(tmp_path / "ep.mp4", scene, world, rec, fps=4.0)
    reader = imageio.get_reader(path)
    frames = [reader.get_data(i) for i in range(2)]
    reader.close()
    assert frames[0].shape == (320, 1152, 3) and frames[0].std() > 10  # FIGSIZE (14.4 x 4 in) at 80 dpi
    assert _decoded_frames(path) == len(rec.path)
    info = _ffprobe(path)
    assert "Video: h264" in info and "Audio: aac" in info and "stereo" in info
    silent = write_video(tmp_path / "silent.mp4", scene, world, rec, fps=4.0, max_frames=3, with_audio=False)
    assert "Video: h264" in _ffprobe(silent) and "Audio:" not in _ffprobe(silent)
    assert _decoded_frames(silent) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.mp4", "silent.mp4"]  # no temporaries left
    track = audio_track([np.ones((44100, 2)), np.zeros((44100, 2))], 44100, 4.0)
    assert track.shape == (2 * 11025, 2) and np.abs(track).max() == pytest.approx(0.9)


def test_slow_video_keeps_every_frame_and_its_audio(tiny, tmp_path):
    """Below 1 fps a frame outlasts the 1 s signal: the audio is padded with silence, no frame is cut."""
    from asgf_nav.viz.video import audio_track, write_video

    _, scene, world, oracle, _ = tiny
    track = audio_track([np.ones((44100, 2)), np.ones((44100, 2))], 44100, 0.5)
    assert track.shape == (4 * 44100, 2)
    assert np.all(track[:44100] == pytest.approx(0.9)) and np.all(track[44100 : 2 * 44100] == 0)
    rec = max(oracle, key=lambda r: len(r.path))
    path = write_video(tmp_path / "slow.mp4", scene, world, rec, fps=0.5, max_frames=3)
    assert "Audio: aac" in _ffprobe(path) and _decoded_frames(path) == 3
    # a frame of 44100 / 29.97 = 1471.5 samples: rounded down, the audio ended first and -shortest cut 3 of 4 frames
    path = write_video(tmp_path / "ntsc.mp4", scene, world, rec, fps=29.97, max_frames=4)
    assert _decoded_frames(path) == 4


def test_frame_size_follows_dpi(tiny):
    from asgf_nav.viz.video import render_frames

    _, scene, world, oracle, _ = tiny
    frames, audio = render_frames(scene, world, oracle[0], max_frames=1, dpi=40)
    assert len(frames) == len(audio) == 1 and frames[0].shape == (160, 576, 3)


def test_final_agent_marker_is_drawn_over_the_goal(tiny):
    import matplotlib.pyplot as plt

    from asgf_nav.viz.trajectories import draw_episode

    _, scene, _, oracle, _ = tiny
    fig, ax = plt.subplots()
    draw_episode(ax, scene, oracle[0])  # the oracle stops on the goal
    zorder = {c.get_label(): c.get_zorder() for c in ax.collections}
    plt.close(fig)
    assert zorder["agent"] > zorder["goal (sound)"]


def test_video_gif_and_script(tiny, tmp_path):
    import visualize_trajectories

    from asgf_nav.eval.report import write_evaluation

    cfg, _, _, oracle, random = tiny
    for name, records in (("oracle", oracle), ("random", random)):
        write_evaluation(
            tmp_path / name, records, {"agent": name, "dataset": "tiny", "sound_split": "unheard", "split": "test"}
        )
    argv = [
        str(tmp_path / "oracle"),
        str(tmp_path / "random"),
        "--data-root",
        cfg.scenes.data_root,
        "--out",
        str(tmp_path / "cmp.png"),
        "--video",
        str(tmp_path / "ep.gif"),
        "--max-frames",
        "3",
    ]
    assert visualize_trajectories.main(argv) == 0
    assert imageio.imread(tmp_path / "cmp.png").std() > 20
    gif = imageio.mimread(tmp_path / "ep.gif")
    assert len(gif) == min(3, len(oracle[0].path)) and gif[0].ndim == 3


def test_visualize_script_names_the_dataset_of_an_evaluation_drawn_with_another(tiny, tmp_path, capsys):
    """--dataset of a preset without the evaluation's scene: no bake command can help, the evaluation's own
    dataset does."""
    import visualize_trajectories

    cfg, _, _, oracle, _ = tiny
    (run,) = _write_evaluations(tmp_path, oracle=oracle)
    argv = [run, "--data-root", cfg.scenes.data_root, "--dataset", "replica", "--out", str(tmp_path / "m.png")]
    with pytest.raises(SystemExit) as exit_info:
        visualize_trajectories.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "build_scenes.py" not in err
    assert (
        f"--dataset: the evaluation's scene 'tiny_room_test' is not in preset 'replica'; {run} is an evaluation of "
        "dataset 'tiny'" in err
    )
    assert not (tmp_path / "m.png").exists()


def test_visualize_script_finds_the_scenes_where_the_evaluation_found_them(tiny, tmp_path, monkeypatch):
    """evaluate.py records its data root; a map of an evaluation run with --data-root needs no --data-root."""
    import visualize_trajectories

    cfg, _, _, oracle, _ = tiny
    (run,) = _write_evaluations(tmp_path, data_root=cfg.scenes.data_root, oracle=oracle)
    monkeypatch.chdir(tmp_path)  # the default data root, ./data, holds no scene
    assert visualize_trajectories.main([run, "--out", str(tmp_path / "map.png")]) == 0
    with pytest.raises(SceneStoreError, match="no baked scene"):  # an explicit root still wins
        visualize_trajectories.main([run, "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")])


def test_visualize_script_takes_config_overrides_and_films_a_scene_without_views(tiny, tmp_path, capsys):
    """KEY=VALUE after the runs reach the config; the video needs only the scene's layout and acoustics."""
    import shutil

    import visualize_trajectories

    from asgf_nav.scenes.store import remove_stage

    cfg, _, _, oracle, _ = tiny
    root = tmp_path / "data"
    shutil.copytree(Path(cfg.scenes.data_root) / "scenes", root / "scenes")
    remove_stage(root / "scenes" / "tiny" / "tiny_room_test", "vision")  # layout + acoustics only
    (run,) = _write_evaluations(tmp_path, oracle=oracle)
    episode = f"tiny_room_test/{oracle[0].episode_id}"
    argv = [run, f"scenes.data_root={root}", "--episode", episode, "--out", str(tmp_path / "map.png")]
    assert visualize_trajectories.main([*argv, "--video", str(tmp_path / "ep.mp4"), "--max-frames", "2"]) == 0
    assert _decoded_frames(tmp_path / "ep.mp4") == 2
    with pytest.raises(SystemExit) as exit_info:
        visualize_trajectories.main([*argv, "task.no_such_key=1"])
    assert exit_info.value.code == 2 and "task.no_such_key" in capsys.readouterr().err


def test_visualize_script_keys_episodes_by_scene_and_id(tiny, tmp_path, capsys):
    """Episode ids repeat across the scenes of a SoundSpaces split: SCENE/ID names one, a shared id is refused."""
    import visualize_trajectories

    cfg, _, _, oracle, _ = tiny
    twin = copy.deepcopy(oracle[1])
    twin.scene, twin.episode_id = "tiny_room_other", oracle[0].episode_id
    (run,) = _write_evaluations(tmp_path, oracle=[oracle[0], twin])
    argv = [run, "--data-root", cfg.scenes.data_root, "--out", str(tmp_path / "map.png")]
    assert visualize_trajectories.main([*argv, "--episode", f"tiny_room_test/{oracle[0].episode_id}"]) == 0
    assert (tmp_path / "map.png").stat().st_size > 0
    for value, message in (
        (oracle[0].episode_id, "is in several scenes (tiny_room_other, tiny_room_test)"),
        ("tiny_room_test/nope", "no episode 'tiny_room_test/nope'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            visualize_trajectories.main([*argv, "--episode", value])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, value
    (unique,) = _write_evaluations(tmp_path, unique=oracle[:2])
    argv[0] = unique
    assert visualize_trajectories.main([*argv, "--episode", oracle[1].episode_id]) == 0


def test_visualize_script_refuses_records_of_another_graph(tiny, tmp_path, capsys):
    """Records whose start / goal node is elsewhere in the opened scene (an older SoundSpaces evaluation)."""
    import visualize_trajectories

    cfg, _, _, oracle, _ = tiny
    moved = copy.deepcopy(oracle[0])
    moved.start_position = [p + 0.5 for p in moved.start_position]
    (run,) = _write_evaluations(tmp_path, moved=[moved])
    with pytest.raises(SystemExit) as exit_info:
        visualize_trajectories.main([run, "--data-root", cfg.scenes.data_root, "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"its start node {moved.start_node} is at" in err
    root = Path(cfg.scenes.data_root) / "scenes"
    assert str(root / "tiny" / "tiny_room_test") in err and str(root / "soundspaces_tiny" / "tiny_room_test") in err
    assert not (tmp_path / "m.png").exists()


def test_soundspaces_evaluation_is_refused_naming_both_scene_directories(tmp_path, capsys):
    """A SoundSpaces evaluation's nodes are the imported graph's, not the generated scene's of that name."""
    import evaluate
    import visualize_trajectories
    from test_soundspaces import write_soundspaces_dataset

    write_soundspaces_dataset(tmp_path / "soundspaces")
    data = tmp_path / "data"
    argv = ["--config", "replica_heard", "--agent", "oracle", "--split", "train", "--data-root", str(data),
            "--out", str(tmp_path / "eval"), "--num-envs", "1", "scenes.source=soundspaces",
            f"scenes.soundspaces_root={tmp_path / 'soundspaces'}", "task.sensors=[spectrogram]"]  # fmt: skip
    assert evaluate.main(argv) == 0
    run = tmp_path / "eval" / "oracle_replica_heard_train"
    meta = json.loads((run / "summary.json").read_text())["meta"]
    assert meta["scene_source"] == "soundspaces" and meta["rir_on_missing"] == "error"  # what bad RIRs became
    with pytest.raises(SystemExit) as exit_info:
        visualize_trajectories.main([str(run), "--data-root", str(data), "--out", str(tmp_path / "map.png")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert str(data / "scenes" / "replica" / "office_9") in err
    assert str(data / "scenes" / "soundspaces_replica" / "office_9") in err


def test_tsne_plot_separates_structured_states(tmp_path):
    rng = np.random.default_rng(0)
    distance = rng.uniform(0, 8, 150).astype(np.float32)
    azimuth = rng.uniform(-180, 180, 150).astype(np.float32)
    rad = np.deg2rad(azimuth)
    states = np.stack([distance, np.cos(rad), np.sin(rad)], 1) @ rng.normal(size=(3, 32))
    data = SpatialStates(states.astype(np.float32), distance, azimuth)
    npz = data.save(tmp_path / "s.npz")
    again = SpatialStates.load(npz)
    np.testing.assert_array_equal(again.states, data.states)
    png = plot_tsne(data, tmp_path / "tsne.png", perplexity=20, max_iter=250)
    img = imageio.imread(png)
    assert img.shape[1] > img.shape[0] and img[..., :3].std() > 20
    # the embedding keeps the structure: a point's nearest neighbour in 2-D is near it in distance to the goal
    points = embed(data.states, perplexity=20, max_iter=250)
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(len(points)) * 1e9
    neighbour_gap = np.abs(distance - distance[gaps.argmin(axis=1)]).mean()
    assert neighbour_gap < 0.5 * np.abs(distance[:, None] - distance[None]).mean()  # 0.34 measured; random: 1


def _spectrogram_policy(test_episodes: int, max_steps: int):
    """A small untrained ASGF policy on the synthetic world's test episodes: (world, episodes, cfg, agent)."""
    from asgf_nav.eval.evaluator import PolicyAgent
    from asgf_nav.models.policies import build_policy
    from asgf_nav.tasks.audionav_env import observation_space_for
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    world = synthetic_world(sample_rate=16000)
    cfg = ExperimentConfig()
    cfg.task.test_episodes, cfg.task.max_steps, cfg.task.sensors = test_episodes, max_steps, ["spectrogram"]
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim = 32, 16, 16
    episodes = generate_split(world, "test", "unheard", ["bell"], cfg.task)
    torch.manual_seed(0)
    return (
        world,
        episodes,
        cfg,
        PolicyAgent(build_policy(cfg, observation_space_for(world, cfg.task.sensors)), cfg.task.sensors),
    )


def test_spatial_states_come_from_the_policy_with_geometric_labels():
    from asgf_nav.eval.evaluator import PolicyAgent
    from asgf_nav.models.policies import build_policy
    from asgf_nav.tasks import MOVE_FORWARD, STOP
    from asgf_nav.tasks.audionav_env import observation_space_for
    from asgf_nav.viz.tsne import collect_spatial_states

    class NeverStops(PolicyAgent):
        """Walks on where the untrained policy would stop: each of the 6 episodes then lasts its 10 steps,
        more than the 25 samples asked, whatever the initial weights."""

        def act(self, obs, ctx):
            actions = super().act(obs, ctx)
            return np.where(actions == STOP, MOVE_FORWARD, actions)

    world, episodes, cfg, untrained = _spectrogram_policy(test_episodes=6, max_steps=10)
    agent = NeverStops(untrained.policy, untrained.sensors)
    data = collect_spatial_states(agent, world, episodes, cfg, samples=25, num_envs=3)
    assert data.states.shape == (25, 16) and data.distance.shape == data.azimuth.shape == (25,)
    assert np.all(data.distance >= 0) and np.all(np.abs(data.azimuth) <= 180)
    first = episodes[:3]  # the first step of env i is episode i at its start pose
    for i, ep in enumerate(first):
        assert data.distance[i] == pytest.approx(ep.geodesic_distance)
    cfg.model.policy = "av_nav"
    no_ase = PolicyAgent(build_policy(cfg, observation_space_for(world, cfg.task.sensors)), cfg.task.sensors)
    with pytest.raises(ValueError, match="no ASE"):
        collect_spatial_states(no_ase, world, episodes, cfg, samples=5, num_envs=2)


def test_spatial_states_are_those_of_the_recorded_episodes():
    """Envs that ran their share of the episodes keep stepping through discarded ones: no state from those."""
    from asgf_nav.viz.tsne import _StateCollector

    world, episodes, cfg, agent = _spectrogram_policy(test_episodes=5, max_steps=12)
    collector = _StateCollector(agent, samples=10**9)
    records = run_episodes(collector, world, episodes, cfg, num_envs=3, progress=False)  # shares 2, 2, 1
    assert len(records) == 5
    assert len(collector.states) == len(collector.distance) == sum(len(r.actions) for r in records)


def test_tsne_of_identical_states_is_refused(tmp_path):
    data = SpatialStates(np.ones((20, 8), np.float32), np.full(20, 2.0, np.float32), np.zeros(20, np.float32))
    with pytest.raises(ValueError, match="all 20 t-SNE states are identical"):
        plot_tsne(data, tmp_path / "t.png", max_iter=250)
    assert not (tmp_path / "t.png").exists()


def test_visualize_script_names_a_bad_evaluation_directory(tmp_path, capsys):
    import visualize_trajectories

    from asgf_nav.cli import run_script
    from asgf_nav.eval.progress import evaluation_lock

    garbled = tmp_path / "garbled"
    garbled.mkdir()
    metric = {"mean": 0.5, "low": 0.1, "high": 0.9, "std": 0.5, "count": 1}
    summary = {"meta": {}, "metrics": dict.fromkeys(("spl", "success", "sna"), metric), "episodes": 1}
    (garbled / "summary.json").write_text(json.dumps(summary))  # a sound summary: the episodes are garbled
    (garbled / "episodes.jsonl").write_text("not json\n")
    stopped = tmp_path / "stopped"  # an evaluation stopped before its summary: only its progress file
    stopped.mkdir()
    (stopped / "episodes.partial.jsonl").write_text('{"evaluation": {}}\n')
    running = tmp_path / "running"  # one just started: its lock is held, nothing written yet
    running.mkdir()
    must = "each RUN must be an evaluation directory: "
    cases = [
        ([str(tmp_path / "missing")], f"no summary.json at {tmp_path / 'missing'}"),
        ([str(garbled)], f"{garbled / 'episodes.jsonl'}:1: not an episode record"),
        (
            [str(garbled / "summary.json")],
            f"{must}{garbled / 'summary.json'} is a file, not an evaluation directory; it is the summary.json of "
            f"the evaluation {garbled.resolve()}: give that directory",
        ),
        ([str(garbled / "episodes.jsonl")], f"it is the episodes.jsonl of the evaluation {garbled.resolve()}"),
        ([str(stopped)], f"{must}{stopped} holds no summary.json yet: the evaluation is unfinished: run its command"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda: visualize_trajectories.main([*argv, "--out", str(tmp_path / "map.png")]))  # noqa: B023
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    with evaluation_lock(running), pytest.raises(SystemExit):
        visualize_trajectories.main([str(running), "--out", str(tmp_path / "map.png")])
    assert f"{running} holds no summary.json yet: the evaluation is still running (its lock is held)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "map.png").exists()


def test_visualize_script_refuses_one_file_for_the_map_and_the_video(tmp_path, capsys):
    """matplotlib 3.11 writes GIF too: a video over the map would replace it without a word (named before the
    map's format is checked, so also where an older matplotlib writes no GIF)."""
    import visualize_trajectories

    argv = [str(tmp_path / "run"), "--out", str(tmp_path / "both.gif"), "--video", str(tmp_path / "." / "both.gif")]
    with pytest.raises(SystemExit) as exit_info:
        visualize_trajectories.main(argv)
    assert exit_info.value.code == 2
    assert f"--out and --video both name {tmp_path / 'both.gif'}; the video would overwrite the map" in (
        capsys.readouterr().err
    )


def test_a_killed_video_write_leaves_only_hidden_temporaries_that_the_clean_up_removes(monkeypatch, tmp_path):
    """Every file beside the video while it is being written is one io.remove_stale_temporaries_of removes
    (a write killed outright runs no clean-up of its own); a finished write leaves the video alone."""
    from asgf_nav.io import remove_stale_temporaries_of
    from asgf_nav.viz import video

    scene, record = _toy_scene_and_record()
    scene.has_vision = False
    world, _ = _toy_world(record)
    out = tmp_path / "ep.mp4"
    seen: dict[str, list[str]] = {}
    real_mux = video.mux_audio

    def killed_while_muxing(silent: Path, wav: Path, finished: Path) -> None:
        real_mux(silent, wav, finished)
        seen["writing"] = sorted(p.name for p in tmp_path.iterdir())
        remove_stale_temporaries_of(out)  # what the next write of ``out`` does after a kill here
        seen["cleaned"] = sorted(p.name for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "mux_audio", killed_while_muxing)
    with pytest.raises(KeyboardInterrupt):
        video.write_video(out, scene, world, record, fps=4.0, dpi=10)
    assert len(seen["writing"]) == 3 and all(n.startswith(".ep.mp4.") and n.endswith(".tmp") for n in seen["writing"])
    assert seen["cleaned"] == [] and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(video, "mux_audio", real_mux)
    assert video.write_video(out, scene, world, record, fps=4.0, dpi=10) == out
    assert [p.name for p in tmp_path.iterdir()] == ["ep.mp4"] and _decoded_frames(out) == len(record.path)
    assert "Audio:" in _ffprobe(out)


def test_show_acoustics_draws_a_baked_scene_and_names_a_bad_source_slot(tiny, tmp_path, capsys):
    import show_acoustics

    cfg = tiny[0]
    argv = ["--dataset", "tiny", "--scene", "tiny_room_test", "--data-root", cfg.scenes.data_root, *TINY_ACOUSTICS]
    assert show_acoustics.main([*argv, "--out", str(tmp_path / "field.png")]) == 0
    image = imageio.imread(tmp_path / "field.png")
    assert image.shape[0] > 200 and image.std() > 20
    with pytest.raises(SystemExit) as exit_info:
        show_acoustics.main([*argv, "--out", str(tmp_path / "other.png"), "--source-slot", "4"])
    assert exit_info.value.code == 2
    assert "--source-slot: tiny_room_test has 4 sources (slots 0-3)" in capsys.readouterr().err


def test_looking_at_a_baked_scene_does_not_bake_it_again_with_the_default_settings(tiny, tmp_path, capsys):
    """The tiny store was baked at 32 px with 4 sources; the default config asks for 128 px and 24 sources.
    Without --config (or --image-size, or overrides) the scripts draw the scene as it is baked."""
    import show_acoustics
    import show_scene

    cfg, scene = tiny[0], tiny[1]
    manifest = scene.directory / "manifest.json"
    before = manifest.read_bytes()
    where = ["--dataset", "tiny", "--scene", "tiny_room_test", "--data-root", cfg.scenes.data_root]
    assert show_scene.main([*where, "--out", str(tmp_path / "sheet.png")]) == 0
    assert show_acoustics.main([*where, "--out", str(tmp_path / "field.png")]) == 0
    location = ["--scene", "tiny_room_test", "scenes.dataset=tiny", f"scenes.data_root={cfg.scenes.data_root}"]
    assert show_acoustics.main([*location, "--out", str(tmp_path / "field2.png")]) == 0  # overrides saying where
    assert manifest.read_bytes() == before  # nothing baked again
    assert imageio.imread(tmp_path / "sheet.png").std() > 20 and imageio.imread(tmp_path / "field.png").std() > 20
    # other settings asked for: refused, not baked over the views and responses runs trained on
    for script, other in ((show_scene, ["--image-size", "16"]), (show_acoustics, ["acoustics.rays=77"])):
        with pytest.raises(SystemExit) as stop:
            script.main([*where, *other, "--out", str(tmp_path / "other.png")])
        assert stop.value.code == 2 and manifest.read_bytes() == before, script
        if script is show_scene:  # each setting named with its baked and asked value
            assert "(vision: image_size baked 32, asked 16)" in capsys.readouterr().err
    assert not (tmp_path / "other.png").exists()


def test_show_acoustics_takes_the_dataset_from_the_config(tiny, tmp_path):
    import show_acoustics

    cfg = tiny[0]
    (tmp_path / "tiny.yaml").write_text("scenes:\n  dataset: tiny\n")
    argv = ["--config", str(tmp_path / "tiny.yaml"), "--scene", "tiny_room_test", "--data-root", cfg.scenes.data_root,
            "--out", str(tmp_path / "field.png"), *TINY_ACOUSTICS]  # fmt: skip
    assert show_acoustics.main(argv) == 0
    assert imageio.imread(tmp_path / "field.png").std() > 20


def test_acoustics_map_has_the_floor_plan_orientation(tiny):
    """The heat map is drawn on the floor plan: z grows downwards as on every other map (yaw 0 points up)."""
    from asgf_nav.acoustics.rir import SceneRirs
    from asgf_nav.viz.acoustic_plot import acoustics_figure

    _, scene, _, _, _ = tiny
    rirs = SceneRirs(scene.store)
    fig = acoustics_figure(scene.floorplan, scene.positions, rirs, int(rirs.source_nodes[0]), [0])
    low, high = fig.axes[0].get_ylim()
    assert low > high, "z must grow downwards"
    fig.clf()


def test_tsne_of_a_policy_trained_with_the_doa_observation(tiny, tmp_path, monkeypatch, capsys):
    """A checkpoint trained with task.use_doa lists 'doa' among its sensors: the script plugs the head in, and
    names a head whose weights changed since training, as evaluate.py does."""
    import tsne

    from asgf_nav.config import config_to_dict
    from asgf_nav.experiment import register_auxiliary_observations
    from asgf_nav.models.policies import build_policy
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.audionav_env import observation_space_for

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))  # the test's "doa" stays here

    cfg, _, world, _, _ = tiny
    cfg = copy.deepcopy(cfg)
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim, cfg.model.fusion_heads = 32, 32, 16, 2
    cfg.task.sensors, cfg.task.use_doa = ["spectrogram"], True
    register_auxiliary_observations(cfg)  # adds "doa" to the sensors, as training does
    policy = build_policy(cfg, observation_space_for(world, cfg.task.sensors))
    state = {
        "model": policy.state_dict(),
        "optimizer": {},
        "rng": {},
        "update": 1,
        "frames": 1,
        "config": config_to_dict(cfg),
        "policy_name": "asgf",
        "doa_head": {"path": "packaged", "sha256": "0123456789abcdef"},  # other weights than the packaged head's
    }
    torch.save(state, tmp_path / "doa.pt")
    observations._REGISTRY.pop("doa")  # a fresh process: only the checkpoint says a DoA head is needed
    argv = ["--dataset", "tiny", "--data-root", cfg.scenes.data_root, "--checkpoint", str(tmp_path / "doa.pt"),
            "--samples", "6", "--episodes", "8", "--perplexity", "2", "--out", str(tmp_path / "t.png"),
            *TINY_ACOUSTICS]  # fmt: skip
    assert tsne.main(argv) == 0 and (tmp_path / "t.png").stat().st_size > 0
    assert "trained with the DoA head packaged of digest 0123456789abcdef" in capsys.readouterr().err  # the log


def test_tsne_script_refuses_too_few_states_in_one_line_and_writes_nothing(tiny, tmp_path, monkeypatch, capsys):
    """Episodes that run out before 5 states are the user's to fix (more --episodes): one ``error:`` line and
    status 2, no traceback, and no .npz left beside a figure that was never drawn."""
    import tsne

    from asgf_nav.config import config_to_dict
    from asgf_nav.models.policies import build_policy
    from asgf_nav.tasks.audionav_env import observation_space_for
    from asgf_nav.viz import tsne as viz_tsne
    from asgf_nav.viz.tsne import SpatialStates

    cfg, _, world, _, _ = tiny
    cfg = copy.deepcopy(cfg)
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim, cfg.model.fusion_heads = 32, 32, 16, 2
    cfg.task.sensors = ["spectrogram"]
    policy = build_policy(cfg, observation_space_for(world, cfg.task.sensors))
    state = {"model": policy.state_dict(), "optimizer": {}, "rng": {}, "update": 1, "frames": 1,
             "config": config_to_dict(cfg), "policy_name": "asgf"}  # fmt: skip
    torch.save(state, tmp_path / "ckpt.pt")
    three = SpatialStates(np.ones((3, 32), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32))
    monkeypatch.setattr(viz_tsne, "collect_spatial_states", lambda *args, **kwargs: three)  # main imports it late
    argv = ["--dataset", "tiny", "--data-root", cfg.scenes.data_root, "--checkpoint", str(tmp_path / "ckpt.pt"),
            "--samples", "6", "--episodes", "1", "--out", str(tmp_path / "t.png"), *TINY_ACOUSTICS]  # fmt: skip
    with pytest.raises(SystemExit) as ended:
        tsne.main(argv)
    assert ended.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "t-SNE needs at least 5 states, got 3 (from 1 episode(s) of split" in error and "--samples 6" in error
    assert not list(tmp_path.glob("t.*"))


def test_the_plotting_modules_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook shows figures inline through its own backend: importing and using the package's plots
    must not switch it (they draw on ``Figure`` objects, never through pyplot's global state)."""
    script = tmp_path / "backend.py"
    script.write_text(
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import asgf_nav.eval.report, asgf_nav.viz.acoustic_plot, asgf_nav.viz.scene_sheet\n"
        "import asgf_nav.viz.trajectories, asgf_nav.viz.tsne, asgf_nav.viz.video\n"
        "from asgf_nav.eval.report import comparison_chart\n"
        "summary = {'meta': {'agent': 'a', 'dataset': 'replica', 'sound_split': 'heard'}, 'episodes': 3,\n"
        "    'metrics': {m: {'mean': 0.5, 'low': 0.4, 'high': 0.6, 'std': 0.1, 'count': 3}\n"
        "                for m in ('spl', 'success', 'sna')}}\n"
        f"comparison_chart([summary], {str(tmp_path / 'chart.png')!r})\n"
        "import numpy as np\n"
        "from asgf_nav.viz.tsne import SpatialStates, plot_tsne\n"
        "rng = np.random.default_rng(0)\n"
        "states = SpatialStates(rng.normal(size=(20, 4)), rng.uniform(0, 5, 20), rng.uniform(-180, 180, 20))\n"
        f"plot_tsne(states, {str(tmp_path / 'tsne.png')!r}, max_iter=250)\n"
        "print(matplotlib.get_backend())\n"
    )
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
    assert imageio.imread(tmp_path / "chart.png").std() > 10 and imageio.imread(tmp_path / "tsne.png").std() > 10


def test_the_video_plays_the_responses_the_evaluated_agent_heard(tiny, tmp_path, monkeypatch):
    """An evaluation records task.keep_travel_time; one recorded before the key heard the travel time."""
    import visualize_trajectories

    from asgf_nav.eval.report import write_evaluation
    from asgf_nav.viz import video

    cfg, _, _, oracle, _ = tiny
    heard = []
    monkeypatch.setattr(video, "write_video", lambda path, scene, world, *a, **k: heard.append(world) or path)
    for name, task in (("now", {"keep_travel_time": False}), ("older", None)):
        meta = {"agent": name, "dataset": "tiny", "sound_split": "unheard", "split": "test"}
        write_evaluation(tmp_path / name, oracle, {**meta, **({"task": task} if task else {})})
        argv = [str(tmp_path / name), "--data-root", cfg.scenes.data_root, "--out", str(tmp_path / f"{name}.png")]
        assert visualize_trajectories.main([*argv, "--video", str(tmp_path / f"{name}.gif")]) == 0
    travel_time = [world.scene(oracle[0].scene).rir.__self__.travel_time for world in heard]
    assert travel_time == [False, True]


def test_heading_vectors_follow_the_yaw_convention() -> None:
    from asgf_nav.viz.trajectories import heading_vector

    np.testing.assert_allclose([heading_vector(k) for k in range(4)], [(0, -1), (-1, 0), (0, 1), (1, 0)], atol=1e-12)


def _toy_scene_and_record():
    """A 3 x 1 corridor scene and a record that walks 0 -> 1 -> 2 with a turn."""
    from types import SimpleNamespace

    from asgf_nav.eval.evaluator import EpisodeRecord
    from asgf_nav.scenes.floorplan import Box, FloorPlan, Material, Room

    positions = np.array([[0.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0]])
    neighbors = np.array([[-1, -1, -1, 1], [-1, 0, -1, 2], [-1, 1, -1, -1]], dtype=np.int32)
    hops = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    room = Room("r", "living", -0.2, -0.2, 1.2, 0.2, "m", "m")
    wall = Box(-0.3, -0.3, 1.3, -0.2, 0, 2.5, "m")
    plan = FloorPlan("toy", "room", 0, 2.5, "m", [room], [wall], [], [], {"m": Material("m", (0.5, 0.5, 0.5))})
    scene = SimpleNamespace(
        positions=positions, neighbors=neighbors, geodesic_hops=hops, floorplan=plan, name="toy", dataset="toy"
    )
    record = EpisodeRecord("0", "toy", "s", 0, 0, 2, [0, 0, 0], [1, 0, 0], 1.0, 3,
                           actions=[3, 1, 1, 0], path=[[0, 0], [0, 3], [1, 3], [2, 3], [2, 3]])  # fmt: skip
    return scene, record


def test_the_drawn_path_is_the_path_the_agent_took() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from asgf_nav.viz.trajectories import draw_episode

    scene, record = _toy_scene_and_record()
    fig, ax = plt.subplots()
    draw_episode(ax, scene, record, show_graph=False)
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_cmap().name == "magma_path"]
    np.testing.assert_allclose(lines.get_segments(), [[[0, 0], [0.5, 0]], [[0.5, 0], [1.0, 0]]])
    agent = next(c for c in ax.collections if c.get_label() == "agent")
    np.testing.assert_allclose(agent.get_offsets(), [[1.0, 0.0]])  # where the agent ended
    plt.close(fig)


def _toy_world(record):
    from types import SimpleNamespace

    sr = 16000

    def rir(receiver, source, yaw):
        out = np.zeros((64, 2), dtype=np.float32)
        out[1 + 7 * yaw + receiver, 0] = 1.0  # a different delay for every (receiver, yaw)
        out[3 + source, 1] = 0.5  # and for every source: the goal's response is not the start's
        return out

    task_scene = SimpleNamespace(rir=rir)
    tone = np.sin(np.arange(sr) * 0.3).astype(np.float32)
    sounds = {"s": tone, "other": -tone}  # the episode's sound is "s": another name would be heard wrongly
    return SimpleNamespace(scene=lambda name: task_scene, sound=sounds.__getitem__, sample_rate=sr), task_scene


def test_the_video_hears_what_the_agent_heard_at_each_pose() -> None:
    from asgf_nav.tasks.spectrogram import binaural_audio_np
    from asgf_nav.viz.video import received_audio

    _, record = _toy_scene_and_record()
    world, task_scene = _toy_world(record)
    for node, yaw in record.path:
        assert record.sound == "s"
        expected = binaural_audio_np(world.sound("s"), task_scene.rir(node, record.goal_node, yaw), world.sample_rate)
        np.testing.assert_array_equal(received_audio(world, task_scene, record, node, yaw), expected)


def test_each_video_frame_shows_the_view_and_the_path_so_far(monkeypatch) -> None:
    from matplotlib.axes import Axes

    from asgf_nav.viz import video

    scene, record = _toy_scene_and_record()
    scene.has_vision = True
    scene.rgb = np.arange(3 * 4 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 4, 2, 2, 3)  # every view differs
    scene.depth = np.zeros((3, 4, 2, 2), dtype=np.float16)
    world, _ = _toy_world(record)
    shown, upto = [], []
    imshow = Axes.imshow
    monkeypatch.setattr(
        Axes, "imshow", lambda ax, img, *a, **k: shown.append(np.asarray(img)) or imshow(ax, img, *a, **k)
    )
    draw = video.draw_episode
    monkeypatch.setattr(video, "draw_episode", lambda *a, **k: upto.append(k["upto"]) or draw(*a, **k))
    video.render_frames(scene, world, record, dpi=10)
    rgb_shown = shown[0::3]  # rgb, depth, spectrogram per frame
    assert len(rgb_shown) == len(record.path)
    for img, (node, yaw) in zip(rgb_shown, record.path):
        np.testing.assert_array_equal(img, scene.rgb[node, yaw])
    assert upto == list(range(1, len(record.path) + 1))


def test_received_energy_is_ten_log10_of_the_summed_squared_samples_of_both_ears():
    """Energy in dB is 10*log10(sum of squares over time and both ears) of the RIR at each receiver,
    for the given source: amplitude 1 in one sample -> 0 dB; 0.1 in both ears -> 10*log10(0.02)."""
    from asgf_nav.viz.acoustic_plot import received_energy_db

    class _FakeRirs:
        """Duck-typed SceneRirs: rir(receiver, source, yaw) -> (L, 2)."""

        def __init__(self, table):
            self.table = table  # {(receiver, source): (L, 2) array}
            self.num_receivers = 1 + max(r for r, _ in table)

        def rir(self, receiver, source, yaw):
            return self.table[(receiver, source)]

    a = np.zeros((8, 2), np.float32)
    a[0, 0] = 1.0  # energy 1 -> 0 dB
    b = np.zeros((8, 2), np.float32)
    b[3] = 0.1  # energy 0.01 + 0.01 = 0.02 -> -16.99 dB (|x| summed would give 0.2 -> -6.99 dB)
    c = np.full((8, 2), 0.5, np.float32)  # energy 16 * 0.25 = 4 -> 6.02 dB
    other = np.full((8, 2), 9.0, np.float32)  # another source's RIRs must not be read
    rirs = _FakeRirs({(0, 1): a, (1, 1): b, (2, 1): c, (0, 0): other, (1, 0): other, (2, 0): other})
    energy = received_energy_db(rirs, source_node=1)
    np.testing.assert_allclose(energy, [0.0, 10 * np.log10(0.02), 10 * np.log10(4.0)], atol=1e-5)


def test_probe_nodes_are_near_middle_and_far_but_never_the_source_itself():
    """Nodes on a line 0..40 m from the source: probes at the 5 %, 52.5 % and 100 % distance ranks,
    i.e. nodes 2, 21 and 40 in increasing distance; the source node (distance 0) is not a probe."""
    from asgf_nav.viz.acoustic_plot import pick_probe_nodes

    positions = np.stack([np.arange(41.0), np.zeros(41), np.zeros(41)], axis=1)
    rng = np.random.default_rng(0)
    perm = rng.permutation(41)  # node index != distance rank
    shuffled = positions[perm]
    source = int(np.flatnonzero(perm == 0)[0])
    picks = pick_probe_nodes(shuffled, source)
    dists = [float(np.linalg.norm(shuffled[p] - shuffled[source])) for p in picks]
    assert dists == [2.0, 21.0, 40.0]
    assert source not in picks
    few = positions[:5]  # a small scene: the nearest probe is still another node
    assert pick_probe_nodes(few, 0) == [1, 2, 4]


def test_spatial_state_distance_is_in_metres_on_a_half_metre_grid():
    """The t-SNE distance label is geodesic hops times the grid size: 3 hops on a 0.5 m grid is 1.5 m."""
    from types import SimpleNamespace

    from asgf_nav.tasks.synthetic import grid_scene
    from asgf_nav.viz.tsne import _StateCollector

    scene = grid_scene("line", nx=4, nz=1, grid_size=0.5)  # node 3 is 3 hops from node 0

    class Inner:
        name, sensors = "stub", ("spectrogram",)
        last_ase_state = torch.ones(1, 4)

        def act(self, obs, ctx):
            return np.zeros(1, np.int64)

    collector = _StateCollector(Inner(), samples=10)
    ctx = SimpleNamespace(
        scenes=[scene],
        episodes=[SimpleNamespace(goal_node=3)],
        nodes=np.array([0]),
        yaws=np.array([0]),
        active=np.array([True]),
    )
    collector.act({}, ctx)
    assert collector.distance == [pytest.approx(1.5)]


def _two_room_plan():
    """Living room (oak floor) and kitchen (tile floor) split by a wall with a doorway under a lintel; a sofa."""
    from asgf_nav.scenes.floorplan import Box, Doorway, FloorPlan, Material, Room

    materials = {
        "oak": Material("oak", (0.6, 0.4, 0.2)),
        "tile": Material("tile", (0.9, 0.9, 0.9)),
        "paint": Material("paint", (0.8, 0.1, 0.1)),
        "fabric": Material("fabric", (0.1, 0.2, 0.7)),
    }
    rooms = [
        Room("living_room", "living", 0.0, 0.0, 4.0, 3.0, "oak", "paint"),
        Room("kitchen", "kitchen", 4.2, 0.0, 6.0, 3.0, "tile", "paint"),
    ]
    walls = [
        Box(-0.1, -0.1, 6.1, 0.0, 0.0, 2.5, "paint"),  # north
        Box(-0.1, 3.0, 6.1, 3.1, 0.0, 2.5, "paint"),  # south
        Box(4.0, 0.0, 4.2, 1.0, 0.0, 2.5, "paint"),  # partition, north of the doorway
        Box(4.0, 1.0, 4.2, 2.0, 2.0, 2.5, "paint", "lintel"),  # above the doorway: not a wall on the map
        Box(4.0, 2.0, 4.2, 3.0, 0.0, 2.5, "paint"),  # partition, south of the doorway
    ]
    sofa = Box(0.5, 0.5, 1.5, 1.0, 0.0, 0.8, "fabric", "furniture:sofa")
    door = Doorway(4.0, 1.0, 4.2, 2.0, 2.0, ("living_room", "kitchen"))
    return FloorPlan("two", "apartment", 0, 2.5, "paint", rooms, walls, [sofa], [door], materials)


def test_floor_plan_draws_each_part_where_it_is_in_its_colour_and_layer() -> None:
    """Rooms are tinted by their floor (0.55 + 0.45 * colour), doorways show through (no lintel is drawn as
    a wall), furniture lies over the walls; labels sit at the centres; z grows downwards with a 0.3 m margin."""
    from matplotlib.figure import Figure

    from asgf_nav.viz.floorplan_plot import draw_floorplan

    ax = Figure().add_subplot()
    draw_floorplan(ax, _two_room_plan(), furniture_labels=True)
    drawn = sorted((*p.get_xy(), p.get_width(), p.get_height(), *p.get_facecolor(), p.get_zorder()) for p in ax.patches)
    wall, door = (43 / 255,) * 3 + (1.0,), (242 / 255, 193 / 255, 78 / 255, 1.0)  # WALL_COLOR, DOORWAY_COLOR
    expected = [
        (-0.1, -0.1, 6.2, 0.1, *wall, 2),
        (-0.1, 3.0, 6.2, 0.1, *wall, 2),
        (0.0, 0.0, 4.0, 3.0, 0.82, 0.73, 0.64, 1.0, 0),  # oak floor
        (0.5, 0.5, 1.0, 0.5, 0.1, 0.2, 0.7, 0.9, 3),  # the sofa in its fabric
        (4.0, 0.0, 0.2, 1.0, *wall, 2),
        (4.0, 1.0, 0.2, 1.0, *door, 1),
        (4.0, 2.0, 0.2, 1.0, *wall, 2),
        (4.2, 0.0, 1.8, 3.0, 0.955, 0.955, 0.955, 1.0, 0),  # tile floor
    ]
    np.testing.assert_allclose(drawn, expected, atol=1e-9)
    labels = sorted((t.get_text(), *t.get_position()) for t in ax.texts)
    # room names in each room's upper-left corner (z grows downwards), furniture names at their centres
    assert labels == [("kitchen", 4.3, 0.1), ("living room", 0.1, 0.1), ("sofa", 1.0, 0.75)]
    # above the plan's data (an acoustics map's dots, zorder 7), below the markers drawn over it (8 and up)
    assert all(7 < t.get_zorder() < 8 for t in ax.texts if t.get_text() != "sofa")
    np.testing.assert_allclose([*ax.get_xlim(), *ax.get_ylim()], [-0.4, 6.4, 3.4, -0.4])


def test_floor_plan_graph_is_drawn_from_x_and_z_with_each_edge_once() -> None:
    """Nodes at height 1.2 m are plotted at (x, z); the edges 0-1 and 1-2 are each one segment."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from asgf_nav.viz.floorplan_plot import draw_floorplan

    positions = np.array([[1.0, 1.2, 1.0], [2.0, 1.2, 1.0], [2.0, 1.2, 2.0]])
    neighbors = np.array([[-1, -1, -1, 1], [-1, 0, 2, -1], [1, -1, -1, -1]])  # 0 -east- 1 -south- 2
    ax = Figure().add_subplot()
    draw_floorplan(ax, _two_room_plan(), positions, neighbors, room_labels=False)
    (edges,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = sorted(tuple(map(tuple, s)) for s in edges.get_segments())
    assert segments == [((1.0, 1.0), (2.0, 1.0)), ((2.0, 1.0), (2.0, 2.0))]
    (nodes,) = [c for c in ax.collections if not isinstance(c, LineCollection)]
    np.testing.assert_allclose(nodes.get_offsets(), [[1.0, 1.0], [2.0, 1.0], [2.0, 2.0]])
    one_way = np.array([[-1, -1, -1, -1], [-1, 0, -1, -1], [1, -1, -1, -1]])  # only 1 -> 0 and 2 -> 1 listed
    ax = Figure().add_subplot()
    draw_floorplan(ax, _two_room_plan(), positions, one_way, room_labels=False)
    (edges,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sorted(tuple(sorted(map(tuple, s))) for s in edges.get_segments()) == segments  # an imported graph's


_DEEPEST = [0, 2, 1, 3, 0]  # the yaw index each node of _view_scene looks deepest at


def _view_scene():
    """Five nodes in four rooms (the 1 m^2 hall holds no node: its nearest is the mid room's centre node);
    node n looks deepest at yaw index _DEEPEST[n]; every view's RGB differs."""
    from types import SimpleNamespace

    from asgf_nav.scenes.floorplan import FloorPlan, Material, Room

    rooms = [
        Room("small", "bathroom", 0.0, 3.0, 2.0, 4.0, "m", "m"),  # area 2, centre (1, 3.5)
        Room("big", "living", 0.0, 0.0, 4.0, 3.0, "m", "m"),  # area 12, centre (2, 1.5)
        Room("hall", "corridor", 6.0, 0.0, 7.0, 1.0, "m", "m"),  # area 1, centre (6.5, 0.5)
        Room("mid", "kitchen", 4.0, 0.0, 6.0, 3.0, "m", "m"),  # area 6, centre (5, 1.5)
    ]
    plan = FloorPlan("views", "apartment", 0, 2.5, "m", rooms, [], [], [], {"m": Material("m", (0.5, 0.5, 0.5))})
    positions = np.array([[1.0, 1.2, 3.5], [2.0, 1.2, 0.5], [2.0, 1.2, 1.5], [5.0, 1.2, 1.5], [5.5, 1.2, 2.5]])
    depth = np.full((5, 4, 2, 2), 2.0, dtype=np.float16)
    depth[np.arange(5), _DEEPEST] = 6.0
    depth[:, :, 0, 0] += np.arange(4, dtype=np.float16)  # views differ; the deepest stays _DEEPEST
    rgb = np.arange(5 * 4 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 4, 2, 2, 3)
    neighbors = np.full((5, 4), -1, dtype=np.int32)
    return SimpleNamespace(
        positions=positions,
        floorplan=plan,
        depth=depth,
        rgb=rgb,
        neighbors=neighbors,
        num_nodes=5,
        dataset="toy",
        name="views",
        grid_size=1.0,
    )


def test_scene_views_go_to_the_largest_rooms_centres_looking_the_deepest_way() -> None:
    """Largest room first: big (node 2), mid (node 3), small (node 0); the hall's nearest node is node 3
    again, so further views are other nodes, never one twice, and never more than the scene has."""
    from asgf_nav.viz.scene_sheet import pick_views

    scene = _view_scene()
    rooms = [(2, _DEEPEST[2]), (3, _DEEPEST[3]), (0, _DEEPEST[0])]
    assert pick_views(scene, 2) == rooms[:2]
    assert pick_views(scene, 3) == rooms
    for count in (4, 5, 9):
        picks = pick_views(scene, count)
        assert picks[:3] == rooms and len(picks) == min(count, 5)
        assert len({node for node, _ in picks}) == len(picks) and all(0 <= k < 4 for _, k in picks)


def test_scene_sheet_marks_each_view_on_the_map_and_shows_its_rgb_and_depth(monkeypatch, tmp_path: Path) -> None:
    """View i is numbered i+1 at its node with an arrow 0.8 m along its heading (yaw index 1 -> -X,
    3 -> +X), shorter where the view faces a wall; its RGB and depth (scaled 0..max_depth) are that node's
    at that yaw."""
    from matplotlib.text import Annotation

    from asgf_nav.viz import scene_sheet

    scene = _view_scene()
    figures = []
    monkeypatch.setattr(scene_sheet, "atomic_savefig", lambda fig, path, **kw: figures.append(fig) or Path(path))
    scene_sheet.make_scene_sheet(scene, tmp_path / "sheet.png", num_views=2)
    ax_map, rgb1, depth1, rgb2, depth2 = figures[0].axes
    arrows = [(*a.xyann, *a.xy) for a in ax_map.texts if isinstance(a, Annotation)]
    np.testing.assert_allclose(arrows, [(2.0, 1.5, 1.2, 1.5), (5.0, 1.5, 5.8, 1.5)], atol=1e-9)
    numbers = {t.get_text(): t.get_position() for t in ax_map.texts if t.get_text().isdigit()}
    assert numbers == {"1": (2.0, 1.5), "2": (5.0, 1.5)}
    for (node, k), rgb, depth in (((2, 1), rgb1, depth1), ((3, 3), rgb2, depth2)):
        np.testing.assert_array_equal(rgb.images[0].get_array(), scene.rgb[node, k])
        np.testing.assert_array_equal(depth.images[0].get_array(), scene.depth[node, k].astype(np.float32))
        # coloured up to the deepest value of the views shown (9 m), rounded up to a metre
        assert depth.images[0].get_clim() == (0, 9.0) and depth.get_title() == "depth (0-9 m)"
    scene_sheet.make_scene_sheet(scene, tmp_path / "sheet.png", num_views=1, max_depth=5.0)
    depth = figures[1].axes[2]
    assert depth.images[0].get_clim() == (0, 5.0) and depth.get_title() == "depth (0-5 m)"
    scene.depth[2, 1, 1, 1] = 0.5  # view 1 faces a wall 0.5 m ahead: its arrow is 0.4 m, not 0.8 m
    scene_sheet.make_scene_sheet(scene, tmp_path / "sheet.png", num_views=1)
    (arrow,) = [(*a.xyann, *a.xy) for a in figures[2].axes[0].texts if isinstance(a, Annotation)]
    np.testing.assert_allclose(arrow, (2.0, 1.5, 1.6, 1.5), atol=1e-9)
    scene.depth[2, 1, 1, 1] = 0.0  # a ray that hit nothing: as far as can be, the full 0.8 m
    scene_sheet.make_scene_sheet(scene, tmp_path / "sheet.png", num_views=1)
    (arrow,) = [(*a.xyann, *a.xy) for a in figures[3].axes[0].texts if isinstance(a, Annotation)]
    np.testing.assert_allclose(arrow, (2.0, 1.5, 1.2, 1.5), atol=1e-9)


def _turning_scene_and_record():
    """Three nodes at height 1.5 m on an L (0 -east- 1 -north- 2) and a record of the oracle's walk 0 -> 2:
    turn right, forward, turn left, forward, stop."""
    from types import SimpleNamespace

    from asgf_nav.eval.evaluator import EpisodeRecord
    from asgf_nav.scenes.floorplan import Box, FloorPlan, Material, Room

    positions = np.array([[0.0, 1.5, 0.0], [0.5, 1.5, 0.0], [0.5, 1.5, -0.5]])
    neighbors = np.array([[-1, -1, -1, 1], [2, 0, -1, -1], [-1, -1, 1, -1]], dtype=np.int32)  # yaw 0..3: -Z -X +Z +X
    hops = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    room = Room("r", "living", -0.2, -0.7, 0.7, 0.2, "m", "m")
    wall = Box(-0.3, 0.2, 0.8, 0.3, 0, 2.5, "m")
    plan = FloorPlan("toy", "room", 0, 2.5, "m", [room], [wall], [], [], {"m": Material("m", (0.5, 0.5, 0.5))})
    scene = SimpleNamespace(
        positions=positions, neighbors=neighbors, geodesic_hops=hops, floorplan=plan, name="toy", dataset="toy"
    )
    record = EpisodeRecord("0", "toy", "s", 0, 0, 2, [0, 1.5, 0], [0.5, 1.5, -0.5], 1.0, 5,
                           actions=[3, 1, 2, 1, 0], path=[[0, 0], [0, 3], [1, 3], [1, 0], [2, 0], [2, 0]],
                           metrics={"success": 1.0, "spl": 1.0})  # fmt: skip
    return scene, record


@pytest.mark.parametrize("room_width, room_depth", [(14.0, 6.0), (8.0, 5.0), (6.0, 6.0), (4.0, 12.0)])
@pytest.mark.parametrize("panels", [1, 2])
def test_the_trajectory_legend_and_title_keep_clear_of_the_maps(room_width, room_depth, panels) -> None:
    """Whatever the plan's shape, the legend sits below every panel's "x (m)" and the figure's title above
    every panel's title (bands kept in inches: as shares of the height they were too thin under wide plans)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from asgf_nav.scenes.floorplan import Room
    from asgf_nav.viz.trajectories import trajectory_figure

    scene, record = _turning_scene_and_record()
    room = Room("r", "living", -0.2, -0.7, room_width - 0.2, room_depth - 0.7, "m", "m")
    scene.floorplan = dataclasses.replace(scene.floorplan, rooms=[room], walls=[])
    fig = trajectory_figure(scene, [record] * panels, [f"agent {i}" for i in range(panels)])
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    title = fig._suptitle.get_window_extent(renderer)
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert len(maps) == panels
    for ax in maps:
        assert legend.y1 <= ax.xaxis.label.get_window_extent(renderer).y0  # display y grows upwards
        assert title.y0 >= ax.title.get_window_extent(renderer).y1
    assert 0 <= legend.x0 and legend.x1 <= fig.bbox.width  # inside the figure, not cut at its edges


def _arrows(ax) -> list[tuple[float, ...]]:
    """(tail x, tail z, head x, head z, r, g, b, a) of each heading arrow on ``ax``."""
    return [(*a.xyann, *a.xy, *a.arrow_patch.get_edgecolor()) for a in ax.texts]


def test_episode_map_draws_the_route_the_turns_and_the_markers_where_they_are() -> None:
    """The shortest path runs through the nodes' (x, z); arrows 0.35 grid steps long (0.175 m) mark the heading at
    the start, at each turn and at the end, coloured by step / steps on the path's map, magma without its palest
    tenth (the colour bar's); moves are coloured by step / (steps - 1) on the same map. The agent's marker is
    hollow: on the goal, the goal star shows through it."""
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from asgf_nav.viz.trajectories import PATH_CMAP, draw_episode

    scene, record = _turning_scene_and_record()
    ax = Figure().add_subplot()
    draw_episode(ax, scene, record, show_graph=False)
    (shortest,) = [line for line in ax.lines if line.get_label() == "shortest path"]
    np.testing.assert_allclose(shortest.get_xydata(), [[0.0, 0.0], [0.5, 0.0], [0.5, -0.5]])
    # poses 0 (start, facing -Z), 1 (turned to +X), 3 (turned to -Z on node 1) and 5 (the end on node 2)
    expected = [
        (0.0, 0.0, 0.0, -0.175, *PATH_CMAP(0.0)),
        (0.0, 0.0, 0.175, 0.0, *PATH_CMAP(1 / 5)),
        (0.5, 0.0, 0.5, -0.175, *PATH_CMAP(3 / 5)),
        (0.5, -0.5, 0.5, -0.675, *PATH_CMAP(1.0)),
    ]
    np.testing.assert_allclose(sorted(_arrows(ax), key=lambda a: a[4:]), expected, atol=1e-9)
    magma = matplotlib.colormaps["magma"]
    np.testing.assert_allclose(PATH_CMAP(1.0), magma(0.85), atol=1e-9)  # the path ends dark enough to be seen
    (moves,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert moves.get_cmap() is PATH_CMAP
    np.testing.assert_allclose(moves.get_array(), [1 / 4, 3 / 4])  # the moves are steps 1 and 3 of 5
    offsets = {c.get_label(): c.get_offsets().tolist() for c in ax.collections if c.get_label() != ""}
    assert offsets["start"] == [[0.0, 0.0]] and offsets["goal (sound)"] == [[0.5, -0.5]]
    assert offsets["agent"] == [[0.5, -0.5]]
    agent = next(c for c in ax.collections if c.get_label() == "agent")
    assert agent.get_facecolor().size == 0 or agent.get_facecolor()[0][3] == 0  # hollow
    assert "heading (start, turns, end)" in ax.get_legend_handles_labels()[1]


def test_a_video_frame_draws_the_first_poses_in_the_colours_of_the_whole_episode() -> None:
    """``upto=3`` draws poses 0..2 only: the agent stands on node 1, and the step colours are those of the full
    map (step / (steps - 1) for moves, step / steps for arrows), so they do not change from frame to frame."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from asgf_nav.viz.trajectories import PATH_CMAP, draw_episode

    scene, record = _turning_scene_and_record()
    ax = Figure().add_subplot()
    draw_episode(ax, scene, record, upto=3, show_graph=False)
    (moves,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    np.testing.assert_allclose(moves.get_segments(), [[[0.0, 0.0], [0.5, 0.0]]])
    np.testing.assert_allclose(moves.get_array(), [1 / 4])
    expected = [
        (0.0, 0.0, 0.0, -0.175, *PATH_CMAP(0.0)),
        (0.0, 0.0, 0.175, 0.0, *PATH_CMAP(1 / 5)),
        (0.5, 0.0, 0.675, 0.0, *PATH_CMAP(2 / 5)),  # the last pose drawn: node 1 facing +X
    ]
    np.testing.assert_allclose(sorted(_arrows(ax), key=lambda a: a[4:]), expected, atol=1e-9)
    agent = next(c for c in ax.collections if c.get_label() == "agent")
    np.testing.assert_allclose(agent.get_offsets(), [[0.5, 0.0]])


def test_trajectory_figure_has_one_titled_panel_with_the_graph_per_record() -> None:
    """Two records give two panels titled 'label: outcome, SPL, actions', each with the navigation graph."""
    from matplotlib.collections import LineCollection

    from asgf_nav.viz.trajectories import trajectory_figure

    scene, record = _turning_scene_and_record()
    failed = copy.deepcopy(record)
    failed.metrics = {"success": 0.0, "spl": 0.0}
    fig = trajectory_figure(scene, [record, failed], ["oracle", "other"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in panels]
    assert titles == ["oracle: success, SPL 1.00, 5 actions", "other: failure, SPL 0.00, 5 actions"]
    for ax in panels:
        graph = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_array() is None]
        assert len(graph) == 1 and len(graph[0].get_segments()) == 2  # the edges 0-1 and 1-2


def test_each_video_frame_shows_the_depth_and_both_ears_of_its_pose(monkeypatch) -> None:
    """Frame k shows depth[node, yaw] and the spectrogram of the response at (node, yaw): left ear below two
    blank rows, right ear above."""
    from matplotlib.axes import Axes

    from asgf_nav.tasks.spectrogram import spectrogram_np
    from asgf_nav.viz import video

    scene, record = _toy_scene_and_record()
    scene.has_vision = True
    scene.rgb = np.zeros((3, 4, 2, 2, 3), dtype=np.uint8)
    scene.depth = np.arange(3 * 4 * 2 * 2, dtype=np.float16).reshape(3, 4, 2, 2) / 10  # every view differs
    world, task_scene = _toy_world(record)
    shown = []
    imshow = Axes.imshow
    monkeypatch.setattr(
        Axes, "imshow", lambda ax, img, *a, **k: shown.append(np.asarray(img)) or imshow(ax, img, *a, **k)
    )
    video.render_frames(scene, world, record, dpi=10)
    assert len(shown) == 3 * len(record.path)
    for k, (node, yaw) in enumerate(record.path):
        np.testing.assert_array_equal(shown[3 * k + 1], scene.depth[node, yaw].astype(np.float32))
        spec = spectrogram_np(world.sound("s"), task_scene.rir(node, record.goal_node, yaw), world.sample_rate)
        blank = np.full((2, spec.shape[1]), np.nan)
        np.testing.assert_array_equal(shown[3 * k + 2], np.concatenate([spec[..., 0], blank, spec[..., 1]]))


def test_audio_track_takes_the_head_of_each_signal_and_scales_the_largest_magnitude_to_0_9() -> None:
    """At 8 Hz and 2 fps a frame holds 4 samples: longer signals are cut, shorter padded with silence; the
    peak is |-4| (not the largest positive sample, 2), scaled to 0.9."""
    from asgf_nav.viz.video import audio_track

    long = np.array([[1, 0], [-4, 2], [0, 0], [1, 1], [9, 9]], dtype=np.float32)  # [9, 9] lies past the frame
    short = np.array([[2, -2]], dtype=np.float32)
    track = audio_track([long, short], 8, 2.0)
    heard = [[1, 0], [-4, 2], [0, 0], [1, 1], [2, -2], [0, 0], [0, 0], [0, 0]]
    np.testing.assert_allclose(track, np.array(heard) * 0.9 / 4, rtol=1e-6)


def test_gif_frames_last_one_over_fps_seconds(tmp_path: Path) -> None:
    """A GIF at 4 fps has one 250 ms frame per pose."""
    from PIL import Image

    from asgf_nav.viz.video import write_video

    scene, record = _toy_scene_and_record()
    scene.has_vision = False
    world, _ = _toy_world(record)
    path = write_video(tmp_path / "ep.gif", scene, world, record, fps=4.0, dpi=10)
    with Image.open(path) as gif:
        assert gif.n_frames == len(record.path)
        assert gif.info["duration"] == 250


def test_spatial_state_azimuth_is_left_positive_in_each_agents_own_frame() -> None:
    """Three envs on node 0 with the target 1.5 m to the east (+X): facing -Z it is to the right (-90 deg),
    facing +Z to the left (+90), facing +X ahead (0); each env records its own row of the ASE state."""
    from types import SimpleNamespace

    from asgf_nav.tasks.synthetic import grid_scene
    from asgf_nav.viz.tsne import _StateCollector

    scene = grid_scene("line", nx=4, nz=1, grid_size=0.5)

    class Inner:
        name, sensors = "stub", ("spectrogram",)
        last_ase_state = torch.arange(6.0).reshape(3, 2)

        def act(self, obs, ctx):
            return np.zeros(3, np.int64)

    collector = _StateCollector(Inner(), samples=10)
    ctx = SimpleNamespace(
        scenes=[scene] * 3,
        episodes=[SimpleNamespace(goal_node=3)] * 3,
        nodes=np.array([0, 0, 0]),
        yaws=np.array([0, 2, 3]),
        active=np.array([True, True, True]),
    )
    collector.act({}, ctx)
    np.testing.assert_allclose(collector.azimuth, [-90.0, 90.0, 0.0], atol=1e-4)
    np.testing.assert_array_equal(np.stack(collector.states), [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])


def test_spatial_states_load_what_was_saved(tmp_path: Path) -> None:
    """Saving and loading keeps each of states, distance and azimuth under its own name."""
    data = SpatialStates(
        np.arange(6, dtype=np.float32).reshape(3, 2),
        np.array([1.0, 2.5, 4.0], np.float32),
        np.array([-90.0, 0.0, 135.0], np.float32),
    )
    again = SpatialStates.load(data.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(again.states, data.states)
    np.testing.assert_array_equal(again.distance, [1.0, 2.5, 4.0])
    np.testing.assert_array_equal(again.azimuth, [-90.0, 0.0, 135.0])


def test_tsne_panels_colour_the_embedding_by_distance_and_by_azimuth(monkeypatch, tmp_path: Path) -> None:
    """Left panel: distance on its own range; right panel: azimuth on the fixed (-180, 180) range."""
    from asgf_nav.viz import tsne

    xy = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]])
    figures = []
    monkeypatch.setattr(tsne, "embed", lambda states, *args: xy)
    monkeypatch.setattr(tsne, "atomic_savefig", lambda fig, path, dpi: figures.append(fig) or Path(path))
    distance = np.array([1.0, 2.0, 3.0, 4.0, 6.0], np.float32)
    azimuth = np.array([-90.0, -45.0, 0.0, 45.0, 90.0], np.float32)
    tsne.plot_tsne(SpatialStates(np.zeros((5, 2), np.float32), distance, azimuth), tmp_path / "t.png")
    (fig,) = figures
    by_distance, by_azimuth = (ax.collections[0] for ax in fig.axes[:2])
    for panel in (by_distance, by_azimuth):
        np.testing.assert_allclose(panel.get_offsets(), xy)
    np.testing.assert_allclose(by_distance.get_array(), distance)
    assert by_distance.get_clim() == (1.0, 6.0)
    np.testing.assert_allclose(by_azimuth.get_array(), azimuth)
    assert by_azimuth.get_clim() == (-180, 180)


def test_tsne_refuses_too_few_or_non_finite_states_and_fits_the_perplexity_to_small_sets() -> None:
    """Under 5 states or a NaN is a clear error; 10 states embed with the default perplexity (30 > 10)."""
    from asgf_nav.viz.tsne import embed

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 5 states, got 4"):
        embed(rng.normal(size=(4, 3)))
    states = rng.normal(size=(10, 3))
    states[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        embed(states)
    assert embed(rng.normal(size=(10, 3)), max_iter=250).shape == (10, 2)


class _ProbeRirs:
    """Duck-typed SceneRirs of source node 0 at 1 kHz: receiver r hears amplitude AMPLITUDE[r] * (1 + yaw) in the
    left ear at sample 10 (r + 1) and half that in the right ear at sample 5; other sources read 9s everywhere."""

    scene, sample_rate, length, num_receivers = "toy", 1000, 200, 5
    AMPLITUDE = (2.0, 0.2, 0.02, 2e-4, 0.0)  # energy 1.25 a^2: 0, -20, -40, -80 dB re node 0; node 4 is silent

    def rir(self, receiver: int, source: int, yaw: int) -> np.ndarray:
        out = np.full((self.length, 2), 9.0 if source != 0 else 0.0, np.float32)
        if source == 0:
            out[10 * (receiver + 1), 0] = self.AMPLITUDE[receiver] * (1 + yaw)
            out[5, 1] = 0.5 * self.AMPLITUDE[receiver] * (1 + yaw)
        return out


def test_received_energy_reads_the_asked_yaw_and_puts_a_silent_node_at_minus_200_db() -> None:
    """At yaw 2 every amplitude is tripled (+20 log10 3 dB); a receiver that hears nothing reads the
    -200 dB floor, not minus infinity."""
    from asgf_nav.viz.acoustic_plot import received_energy_db

    energy = received_energy_db(_ProbeRirs(), source_node=0, yaw_index=2)
    expected = [10 * np.log10(1.25 * (3 * a) ** 2) if a else -200.0 for a in _ProbeRirs.AMPLITUDE]
    np.testing.assert_allclose(energy, expected, atol=1e-6)


def test_acoustics_figure_maps_the_energy_re_its_maximum_and_plots_each_probes_two_ears() -> None:
    """The heat map sits at the nodes' (x, z) in dB re the loudest node on a -60..0 dB scale, the star on the
    source, probe i numbered i + 1 at its node; probe panels show the first 150 ms (one sample per ms at
    1 kHz) of the left and right ear of the response from the source, titled with distance and energy, left
    above and right below (each offset by 1.1 x the larger peak, so neither trace hides the other)."""
    from matplotlib.text import Annotation

    from asgf_nav.viz.acoustic_plot import acoustics_figure

    positions = np.array([[1.0, 1.5, 1.0], [2.0, 1.5, 1.0], [2.0, 1.5, 2.0], [5.0, 1.5, 2.0], [5.5, 1.5, 0.5]])
    fig = acoustics_figure(_two_room_plan(), positions, _ProbeRirs(), source_node=0, probe_nodes=[1, 3])
    ax_map = fig.axes[0]
    heat, source = ax_map.collections
    np.testing.assert_allclose(heat.get_offsets(), positions[:, [0, 2]])
    np.testing.assert_allclose(heat.get_array(), [0.0, -20.0, -40.0, -80.0, -200.0 - 10 * np.log10(5)], atol=1e-6)
    assert heat.get_clim() == (-60, 0)
    assert source.get_label() == "source"
    np.testing.assert_allclose(source.get_offsets(), [[1.0, 1.0]])
    numbers = {a.get_text(): a.xy for a in ax_map.texts if isinstance(a, Annotation)}
    assert {k: tuple(v) for k, v in numbers.items()} == {"1": (2.0, 1.0), "2": (5.0, 2.0)}
    probes = [ax for ax in fig.axes if ax.get_title()[:1].isdigit()]
    titles = [ax.get_title() for ax in probes]
    assert titles == ["1: node 1, 1.0 m, -20 dB, yaw 0", "2: node 3, 4.1 m, -80 dB, yaw 0"]  # |(3, 1)| = 4.12 m
    for ax, (node, amplitude) in zip(probes, ((1, 0.2), (3, 2e-4))):
        left, right = ax.lines
        assert (left.get_label(), right.get_label()) == ("left", "right")
        for line in (left, right):
            np.testing.assert_allclose(line.get_xdata(), np.arange(150.0))
        expected_left, expected_right = np.zeros(150), np.zeros(150)
        expected_left[10 * (node + 1)], expected_right[5] = amplitude, amplitude / 2
        gap = 1.1 * amplitude
        np.testing.assert_allclose(left.get_ydata(), expected_left + gap, rtol=1e-6)
        np.testing.assert_allclose(right.get_ydata(), expected_right - gap, rtol=1e-6)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["L", "R"]


def test_probe_nodes_of_a_one_node_scene_are_its_only_node() -> None:
    """With no other node, every probe is the source node itself (rather than an error)."""
    from asgf_nav.viz.acoustic_plot import pick_probe_nodes

    assert pick_probe_nodes(np.zeros((1, 3)), 0) == [0, 0, 0]


def test_each_video_frame_names_its_step_and_next_action_on_fixed_depth_colours_with_the_left_ear_below(
    monkeypatch,
) -> None:
    """Frame k of 4 actions (turn right, forward, forward, stop) reads 'step k/4  next: <action k>', the last
    'next: end'; depth is coloured on a fixed 0..10 m scale and the spectrogram drawn from the bottom up."""
    from asgf_nav.viz import video

    scene, record = _toy_scene_and_record()
    scene.has_vision = True
    scene.rgb = np.zeros((3, 4, 2, 2, 3), dtype=np.uint8)
    scene.depth = np.arange(3 * 4 * 2 * 2, dtype=np.float16).reshape(3, 4, 2, 2) / 10  # far below 10 m
    world, _ = _toy_world(record)
    seen = []

    def frame(canvas) -> np.ndarray:
        axes = canvas.figure.axes
        title = " ".join(text.get_text() for text in canvas.figure.texts)  # the suptitle (get_suptitle: 3.8+)
        seen.append((title, axes[1].images[0].get_clim(), axes[2].images[0].origin))
        return np.zeros((1, 1, 3), np.uint8)

    monkeypatch.setattr(video, "_frame", frame)
    video.render_frames(scene, world, record, dpi=10)
    nexts = ["TURN_RIGHT", "MOVE_FORWARD", "MOVE_FORWARD", "STOP", "end"]
    assert [title for title, _, _ in seen] == [f"toy ep 0 's'  step {k}/4  next: {a}" for k, a in enumerate(nexts)]
    assert all(clim == (0, 10) and origin == "lower" for _, clim, origin in seen)


def test_audio_track_rounds_a_frame_up_to_whole_samples_and_keeps_silence_silent() -> None:
    """At 8 Hz and 3 fps a frame is ceil(2.67) = 3 samples, at 3.5 fps ceil(2.29) = 3 (never fewer than the
    video lasts, which -shortest would cut to); an all-silent track stays zeros (no 0/0 NaN)."""
    from asgf_nav.viz.video import audio_track

    track = audio_track([np.ones((10, 2), np.float32), np.ones((10, 2), np.float32)], 8, 3.0)
    np.testing.assert_allclose(track, np.full((6, 2), 0.9), rtol=1e-6)
    assert audio_track([np.ones((10, 2), np.float32)] * 2, 8, 3.5).shape == (6, 2)
    assert audio_track([np.ones((44100, 2), np.float32)] * 2, 44100, 13.0).shape == (2 * 3393, 2)  # 3392.3
    silent = audio_track([np.zeros((10, 2), np.float32)], 8, 2.0)
    np.testing.assert_array_equal(silent, np.zeros((4, 2)))


def test_a_gif_goes_into_a_new_folder_whatever_the_suffix_case_and_loops_forever(tmp_path: Path) -> None:
    """'.GIF' is a GIF; the missing folder is made; the GIF loops (loop 0); '.avi' is refused by name."""
    from PIL import Image

    from asgf_nav.viz.video import write_video

    scene, record = _toy_scene_and_record()
    scene.has_vision = False
    world, _ = _toy_world(record)
    path = write_video(tmp_path / "new" / "ep.GIF", scene, world, record, fps=4.0, dpi=10)
    assert path == tmp_path / "new" / "ep.GIF"
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(record.path) and gif.info["loop"] == 0
    with pytest.raises(ValueError, match=r"ep\.avi must end in \.mp4 or \.gif"):
        write_video(tmp_path / "ep.avi", scene, world, record)


def test_a_failed_audio_mux_is_an_error_naming_ffmpeg(tmp_path: Path) -> None:
    """ffmpeg cannot read a missing video: mux_audio raises instead of leaving no output silently."""
    from asgf_nav.viz.video import mux_audio

    with pytest.raises(RuntimeError, match="ffmpeg failed to mux"):
        mux_audio(tmp_path / "none.mp4", tmp_path / "none.wav", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_tsne_runs_scikit_learn_with_the_callers_seed_iterations_and_a_capped_perplexity(
    monkeypatch, tmp_path: Path
) -> None:
    """embed asks for a 2-D PCA-initialised t-SNE with the given seed and iterations, the perplexity capped at
    (n - 1) / 3 = 3 for 10 states; plot_tsne hands its perplexity, seed and iterations to embed."""
    import sklearn.manifold

    from asgf_nav.viz import tsne

    made = []

    class FakeTSNE:
        def __init__(self, **kwargs) -> None:
            made.append(kwargs)

        def fit_transform(self, states: np.ndarray) -> np.ndarray:
            return np.zeros((len(states), 2))

    monkeypatch.setattr(sklearn.manifold, "TSNE", FakeTSNE)
    states = np.random.default_rng(0).normal(size=(10, 3))
    tsne.embed(states, perplexity=30.0, seed=7, max_iter=300)
    tsne.embed(states, perplexity=2.0, seed=1, max_iter=250)
    assert made == [
        {"n_components": 2, "perplexity": 3.0, "init": "pca", "random_state": 7, "max_iter": 300},
        {"n_components": 2, "perplexity": 2.0, "init": "pca", "random_state": 1, "max_iter": 250},
    ]
    asked = []
    monkeypatch.setattr(tsne, "embed", lambda states, *args: asked.append(args) or np.zeros((len(states), 2)))
    monkeypatch.setattr(tsne, "atomic_savefig", lambda fig, path, dpi: Path(path))
    data = SpatialStates(states.astype(np.float32), np.arange(10.0), np.zeros(10))
    tsne.plot_tsne(data, tmp_path / "t.png", perplexity=5.0, seed=3, max_iter=400)
    assert asked == [(5.0, 3, 400)]


def test_a_step_without_an_ase_state_names_the_missing_last_ase_state_or_the_registered_policies(
    monkeypatch,
) -> None:
    """A plugin policy declaring has_spatial_state that never sets last_ase_state is told to set it; a policy
    without an ASE module is offered the registered ones that have it, plugins' included."""
    from types import SimpleNamespace

    from asgf_nav.models.policies import POLICY_REGISTRY
    from asgf_nav.viz.tsne import _StateCollector, spatial_state_policies

    monkeypatch.setitem(POLICY_REGISTRY, "probe_plugin_ase", SimpleNamespace(has_spatial_state=True))
    assert spatial_state_policies() == ["asgf", "asgf_no_asgf", "probe_plugin_ase"]

    def collector(has_spatial_state: bool) -> _StateCollector:
        policy = SimpleNamespace(policy_name="mine", has_spatial_state=has_spatial_state)
        inner = SimpleNamespace(
            name="policy", sensors=("spectrogram",), policy=policy, last_ase_state=None, act=lambda obs, ctx: None
        )
        return _StateCollector(inner, samples=5)

    with pytest.raises(ValueError, match=r"'mine' sets has_spatial_state=True but left last_ase_state None.*"
                                         r"self\.last_ase_state.*docs/models\.md"):  # fmt: skip
        collector(True).act({}, None)
    with pytest.raises(ValueError, match=r"'mine' has no ASE module.*asgf or asgf_no_asgf or probe_plugin_ase$"):
        collector(False).act({}, None)


def test_collecting_resets_the_policy_and_names_an_empty_rollout(monkeypatch) -> None:
    """The collector passes reset(num_envs) on to the policy (its recurrent state); a rollout that records no
    step is a clear error."""
    from types import SimpleNamespace

    from asgf_nav.viz import tsne

    resets = []
    inner = SimpleNamespace(name="stub", sensors=("spectrogram",), reset=resets.append, last_ase_state=None)

    def rollout(agent, world, episodes, cfg, num_envs, device):
        agent.reset(num_envs)
        return []

    monkeypatch.setattr(tsne, "run_episodes", rollout)
    with pytest.raises(ValueError, match="no ASE states were collected"):
        tsne.collect_spatial_states(inner, None, [], None, samples=5, num_envs=3)
    assert resets == [3]


def test_floor_plan_without_labels_has_no_text_and_square_metres() -> None:
    """room_labels=False draws no room name; one metre is as long along z as along x (equal aspect)."""
    from matplotlib.figure import Figure

    from asgf_nav.viz.floorplan_plot import draw_floorplan

    ax = Figure().add_subplot()
    draw_floorplan(ax, _two_room_plan(), room_labels=False)
    assert len(ax.texts) == 0 and ax.get_aspect() == 1.0


def test_scene_views_beyond_the_rooms_face_every_yaw() -> None:
    """A plan with no room gives only random views, each looking the deepest way: over 40 nodes whose four
    yaws are equally deep they take all four, each node once; where one yaw is deepest, that one."""
    from types import SimpleNamespace

    from asgf_nav.viz.scene_sheet import pick_views

    scene = SimpleNamespace(
        positions=np.zeros((40, 3)), floorplan=SimpleNamespace(rooms=[]), depth=np.zeros((40, 4, 1, 1)), num_nodes=40
    )
    picks = pick_views(scene, 40)
    assert sorted(node for node, _ in picks) == list(range(40))
    assert {yaw for _, yaw in picks} == {0, 1, 2, 3}
    scene.depth[:, 2] = 3.0
    assert {yaw for _, yaw in pick_views(scene, 40)} == {2}


def test_an_episode_map_is_titled_with_its_outcome_and_action_count_by_default() -> None:
    """Without a title the map reads 'scene ep id (sound): success|failure, SPL, actions taken'."""
    from matplotlib.figure import Figure

    from asgf_nav.viz.trajectories import draw_episode

    scene, record = _turning_scene_and_record()
    ax = Figure().add_subplot()
    draw_episode(ax, scene, record, show_graph=False)
    assert ax.get_title() == "toy ep 0 (s): success, SPL 1.00, 5 actions"
    record.metrics = {"success": 0.0, "spl": 0.0}
    ax = Figure().add_subplot()
    draw_episode(ax, scene, record, show_graph=False)
    assert ax.get_title() == "toy ep 0 (s): failure, SPL 0.00, 5 actions"


def test_visualize_script_names_a_record_it_cannot_draw_and_a_file_without_episodes(tiny, tmp_path, capsys):
    """A record without a path, with a path or node that is not node numbers, or whose path leaves the scene's
    graph is refused naming the file, the episode and what is wrong (not an IndexError / TypeError); an empty
    episodes.jsonl is named as one, not as evaluations that share no episode."""
    import visualize_trajectories

    from asgf_nav.cli import run_script

    cfg, _, _, oracle, _ = tiny
    (run,) = _write_evaluations(tmp_path, oracle=oracle[:1])
    file = Path(run) / "episodes.jsonl"
    record = json.loads(file.read_text())
    name = f"{oracle[0].scene}/{oracle[0].episode_id}"
    far_path = [list(pose) for pose in record["path"]]
    far_path[1][0] = 999
    cases = [
        ({k: v for k, v in record.items() if k != "path"}, f"{file}: episode {name} cannot be drawn: it has no path"),
        (record | {"path": far_path}, f"its path goes to node 999 (pose 1 in {file}), which is not one of the"),
        (record | {"path": "0,1,2"}, f"{file}: episode {name} cannot be drawn: path is '0,1,2', not a list"),
        (record | {"start_node": str(record["start_node"])}, f"episode {name} cannot be drawn: start_node is '"),
        (record | {"path": [[str(n), y] for n, y in record["path"]]}, f"{name} cannot be drawn: path[0] is ['"),
        (None, f"{file} holds no episodes"),
    ]
    for damaged, message in cases:
        file.write_text("" if damaged is None else json.dumps(damaged) + "\n")
        argv = [run, "--data-root", cfg.scenes.data_root, "--out", str(tmp_path / "map.png")]
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda: visualize_trajectories.main(argv))  # noqa: B023 (called at once)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, (message, err)
        assert name in err or damaged is None
    assert not (tmp_path / "map.png").exists()


def test_a_video_of_responses_baked_or_rendered_since_the_evaluation_says_so(tiny, tmp_path, monkeypatch):
    """The video plays the scene's responses as baked and rendered now; where those are of other acoustics or
    render versions than the evaluation recorded (or it recorded none), a warning names both."""
    import visualize_trajectories

    from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
    from asgf_nav.acoustics.rir import RENDER_VERSION
    from asgf_nav.eval.report import write_evaluation
    from asgf_nav.viz import evaluated_episode, video

    cfg, scene, _, oracle, _ = tiny
    monkeypatch.setattr(video, "write_video", lambda path, *a, **k: path)
    meta = {"dataset": "tiny", "sound_split": "unheard", "split": "test", "scene_source": "embedded"}
    heard = {"acoustics_version": ACOUSTICS_VERSION, "render_version": RENDER_VERSION}
    for name, versions in (("now", heard), ("older", {}), ("deaf", dict.fromkeys(heard))):
        write_evaluation(tmp_path / name, oracle, {"agent": name, **meta, **versions})
    write_evaluation(tmp_path / "random", oracle, {"agent": "random", **meta})  # an earlier release's, heard nothing

    said: list[str] = []  # the script's warnings (its own logging set-up is not caplog's)
    monkeypatch.setattr(visualize_trajectories.logger, "warning", lambda message, *args: said.append(message % args))

    def warnings(name: str) -> list[str]:
        said.clear()
        argv = [str(tmp_path / name), "--data-root", cfg.scenes.data_root, "--out", str(tmp_path / f"{name}.png")]
        assert visualize_trajectories.main([*argv, "--video", str(tmp_path / f"{name}.gif")]) == 0
        return list(said)

    assert warnings("now") == [] and warnings("deaf") == [] and warnings("random") == []
    played = f"the video plays {scene.directory}'s responses of acoustics version {ACOUSTICS_VERSION}"
    monkeypatch.setattr(evaluated_episode, "RENDER_VERSION", RENDER_VERSION + 1)  # the code renders otherwise now
    assert warnings("now") == [
        f"{tmp_path / 'now'} was evaluated on responses of acoustics version {ACOUSTICS_VERSION}, render version "
        f"{RENDER_VERSION}; {played}, render version {RENDER_VERSION + 1} (RENDER_VERSION {RENDER_VERSION} -> "
        f"{RENDER_VERSION + 1}), not the sound its agent heard"
    ]
    assert warnings("deaf") == []  # an agent that heard nothing (oracle, random)
    monkeypatch.setattr(evaluated_episode, "RENDER_VERSION", RENDER_VERSION)
    assert warnings("older") == [
        f"{tmp_path / 'older'} was evaluated by an earlier release that did not record the acoustics and render "
        f"versions its agent heard; {played}, render version {RENDER_VERSION}, which may not be those"
    ]
