"""The benchmarks measure what they print: cached replays hit, training time is updates only, variants run in
turns, missing devices fail first, spectrogram-only runs need no views, and the labels say what they mean."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scene_helpers import bake_audio_only, cheap_acoustics

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.cli import run_script
from asgf_nav.config import load_config
from asgf_nav.models.encoders import smallest_visual_size
from asgf_nav.tasks import observations

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import their siblings, as when run as scripts

import env_throughput  # noqa: E402
import train_throughput  # noqa: E402

TINY_TRAINING = ["--env", "random", "--policies", "av_nav", "--num-envs", "2", "--num-steps", "4", "--image-size", "36"]


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the observation registry for the test (the DoA head registers itself process-wide)."""
    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))


def run_benchmark(monkeypatch, module, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    module.main()


# ------------------------------------------------------------------------------------------ env_throughput
def test_the_cached_replay_hits_every_lookup_even_where_the_cache_is_smaller_than_the_timed_steps():
    world = env_throughput.build_synthetic(8, 16000, 5, 4, 3)
    episodes = env_throughput.episodes_for(world, "heard", 20, [])
    r = env_throughput.time_batched(world, episodes, 4, "cpu", steps=6, warmup=3, cache_size=4, policy="random")
    assert r["hit_rate"] < 1.0  # 4 entries for 24 lookups: the live env misses
    assert r["cached_hit_rate"] == 1.0 and r["cached_cache_size"] > 4  # the replay's cache holds them all
    assert r["cached"] > 0 and r["live"] > 0


def test_env_throughput_prints_the_cached_replays_hit_rate(monkeypatch, capsys, tmp_path):
    out = tmp_path / "et.json"
    world = ["--image-size", "8", "--sample-rate", "16000", "--grid", "5", "4", "--sources", "3"]
    sizes = ["--sizes", "3", "--steps", "4", "--warmup", "2", "--ref-steps", "2", "--cache-size", "3"]
    run_benchmark(monkeypatch, env_throughput, *world, *sizes, "--sound-splits", "heard", "--json", str(out))
    printed = capsys.readouterr().out
    assert "cached hits" in printed and "warning" not in printed
    (row,) = json.loads(out.read_text())
    assert row["device"] == "cpu" and row["cached_hit_rate"] == 1.0


def test_the_reference_runs_in_turns_with_every_timed_batched_step():
    """--ref-steps reference steps spread over the live and the cached timed steps, none left out."""
    world = env_throughput.build_synthetic(8, 16000, 5, 4, 3)
    episodes = env_throughput.episodes_for(world, "heard", 20, [])
    reference = env_throughput.ReferenceTimer(world, episodes)
    turns = []
    spread = reference.spread(7, 2 * 3)

    def between():
        before = reference.steps
        spread()
        turns.append(reference.steps - before)

    env_throughput.time_batched(world, episodes, 2, "cpu", steps=3, warmup=1, cache_size=4, policy="random",
                                between=between)  # fmt: skip
    assert len(turns) == 6 and sum(turns) == 7 == reference.steps and max(turns) - min(turns) <= 1
    assert reference.seconds > 0


def test_the_reference_takes_its_warmup_steps_untimed(monkeypatch):
    """Its cold start (page-in, HRTF load, first FFTs) used to be timed in the first row of each sound split."""
    world = env_throughput.build_synthetic(8, 16000, 5, 4, 3)
    episodes = env_throughput.episodes_for(world, "heard", 20, [])
    stepped = []
    step = env_throughput.AudioNavEnv.step
    monkeypatch.setattr(env_throughput.AudioNavEnv, "step", lambda self, a: stepped.append(a) or step(self, a))
    reference = env_throughput.ReferenceTimer(world, episodes, warmup=3)
    assert len(stepped) == 3 and (reference.steps, reference.seconds) == (0, 0.0)  # stepped, neither counted
    reference.run(2)
    assert len(stepped) == 5 and reference.steps == 2 and reference.seconds > 0


def test_env_throughput_gives_the_reference_the_warmup_steps(monkeypatch, capsys):
    warmups = []

    class Recorded(env_throughput.ReferenceTimer):
        def __init__(self, world, episodes, seed=0, warmup=0):
            warmups.append(warmup)
            super().__init__(world, episodes, seed, warmup)

    monkeypatch.setattr(env_throughput, "ReferenceTimer", Recorded)
    world = ["--image-size", "8", "--sample-rate", "16000", "--grid", "5", "4", "--sources", "3"]
    sizes = ["--sizes", "2", "--steps", "2", "--warmup", "3", "--ref-steps", "2", "--cache-size", "2"]
    run_benchmark(monkeypatch, env_throughput, *world, *sizes, "--sound-splits", "heard")
    assert warmups == [3]


def test_one_device_named_twice_is_refused_whatever_its_spelling():
    from asgf_nav.config import ConfigError
    from asgf_nav.devices import devices_to_compare

    for names in (["cpu", "cpu"], ["cpu", "cpu:0"]):
        with pytest.raises(ConfigError, match="more than once"):
            devices_to_compare(names)
    assert [str(d) for d in devices_to_compare(["cpu"])] == ["cpu"]


def test_doa_observation_refuses_baked_scene_options_without_a_data_root(monkeypatch, capsys):
    import doa_observation

    for argv, named in ((["--split", "val"], "--split"), (["--config", "tiny_heard", "acoustics.rays=9"], "--config")):
        with pytest.raises(SystemExit) as stop:
            run_benchmark(monkeypatch, doa_observation, *argv)
        assert stop.value.code == 2
        assert f"{named}" in (err := capsys.readouterr().err) and "set the baked scenes of --data-root" in err


def test_env_throughput_refuses_the_options_of_the_other_world(monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("a world was built from options that were refused")

    monkeypatch.setattr(env_throughput, "build_synthetic", no_work)
    monkeypatch.setattr(env_throughput, "load_baked_world", no_work)
    for argv, wording in (
        (
            ["--world", "embedded", "--image-size", "64", "--grid", "3", "3"],
            "--image-size, --grid: not used by --world embedded",
        ),
        (
            ["--data-root", "DATA", "scenes.image_size=64"],
            "--data-root, config overrides ['scenes.image_size=64']: not used by --world synthetic",
        ),
    ):
        monkeypatch.setattr(sys, "argv", ["env_throughput.py", *argv])
        with pytest.raises(SystemExit) as stop:
            env_throughput.main()
        assert stop.value.code == 2
        assert wording in capsys.readouterr().err


def test_reverberation_time_refuses_the_shoebox_options_with_a_scene_dir(monkeypatch, capsys, tmp_path):
    import reverberation_time

    monkeypatch.setattr(reverberation_time, "scene_tails", lambda *a: pytest.fail("traced with options it ignores"))
    for argv, named in (
        (["--rays", "20000", "--sample-rate", "8000"], "--rays, --sample-rate"),  # the default, given, too
        (["--walls", "brick_red", "--floor", "wood_floor", "--ceiling", "metal"], "--walls, --floor, --ceiling"),
        (["--size", "3", "3", "3"], "--size"),
    ):
        with pytest.raises(SystemExit) as stop:
            run_benchmark(monkeypatch, reverberation_time, "--scene-dir", str(tmp_path), *argv)
        assert stop.value.code == 2
        assert f"{named}: not used with --scene-dir" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ devices
def test_a_device_this_machine_lacks_ends_the_benchmarks_before_any_work(monkeypatch, capsys, no_gpu):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the devices were checked")

    monkeypatch.setattr(env_throughput, "build_synthetic", no_work)
    monkeypatch.setattr(env_throughput, "load_baked_world", no_work)
    monkeypatch.setattr(train_throughput, "load_config", no_work)
    for module in (env_throughput, train_throughput):
        monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", "--devices", "cpu", "cuda"])
        with pytest.raises(SystemExit) as stop:
            run_script(module.main)
        assert stop.value.code == 2
        assert capsys.readouterr().err.startswith("error: --devices: 'cuda' asks for a GPU, but this torch")


# ------------------------------------------------------------------------------------------ train_throughput
def test_training_throughput_times_the_updates_only(monkeypatch):
    from asgf_nav.rl.trainer import Trainer

    saves, updates = [], []
    update_once = Trainer.update_once

    def slow_save(self):
        saves.append(self.updates_done)
        time.sleep(1.0)

    def timed_update_once(self):
        start = time.perf_counter()
        stats = update_once(self)
        updates.append(time.perf_counter() - start)
        return stats

    monkeypatch.setattr(Trainer, "save", slow_save)
    monkeypatch.setattr(Trainer, "update_once", timed_update_once)
    cfg = load_config(None, ["model.policy=av_nav", "ppo.num_envs=2", "ppo.num_steps=4", "ppo.ppo_epoch=1"])
    (result,) = train_throughput.measure([("", [], cfg)], "random", torch.device("cpu"), 1, 2, 36)
    assert len(updates) == 3 and not saves  # one warm-up and two timed updates; no checkpoint
    assert sum(updates[1:]) <= result["seconds"] < sum(updates[1:]) + 0.5  # not the 1 s a save takes
    assert result["fps"] == pytest.approx(2 * 2 * 4 / result["seconds"])


def test_a_variant_names_its_overrides_and_commas_in_brackets_stay_in_their_value():
    parse = train_throughput.parse_variant
    assert parse("store") == parse("store:") == ("store", [])
    assert parse("v:task.spectrogram_store=,task.sensors=[depth,spectrogram]") == (
        "v",
        ["task.spectrogram_store=", "task.sensors=[depth,spectrogram]"],
    )
    with pytest.raises(argparse.ArgumentTypeError, match="'a:ppo.lr': 'ppo.lr' is not a KEY=V override"):
        parse("a:ppo.lr")
    with pytest.raises(argparse.ArgumentTypeError, match="has no name"):
        parse(":ppo.lr=1")


def record_updates(monkeypatch, field) -> list:
    """``field(trainer)`` of each trainer whose update runs, in order (the order the benchmark times them)."""
    from asgf_nav.rl.trainer import Trainer

    order = []
    update_once = Trainer.update_once

    def recorded(self):
        order.append(field(self))
        return update_once(self)

    monkeypatch.setattr(Trainer, "update_once", recorded)
    return order


def test_variants_are_timed_in_turns_and_printed_with_their_ratio_to_the_first(monkeypatch, capsys, tmp_path):
    order = record_updates(monkeypatch, lambda trainer: trainer.cfg.ppo.lr)
    out = tmp_path / "tt.json"
    variants = ["--variant", "a", "--variant", "b:ppo.lr=0.001"]
    run_benchmark(monkeypatch, train_throughput, *TINY_TRAINING, *variants, "--json", str(out), "ppo.ppo_epoch=1")
    lr = load_config(None, []).ppo.lr
    assert order == [lr, 0.001] * 3  # warm-up, then two timed turns each
    a, b = json.loads(out.read_text())
    assert (a["variant"], a["ratio"], b["variant"]) == ("a", 1.0, "b")
    assert b["ratio"] == pytest.approx(b["fps"] / a["fps"]) and b["overrides"] == ["ppo.lr=0.001"]
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == f"torch threads {torch.get_num_threads()}" and a["threads"] == torch.get_num_threads()
    assert "1.00x av_nav/a  (no overrides)" in lines[0] and f"{b['ratio']:6.2f}x av_nav/a  (ppo.lr=0.001)" in lines[1]


def test_every_policy_is_timed_in_turns_with_its_ratio_to_the_first(monkeypatch, capsys, tmp_path):
    """Without variants the policies used to be timed one after another and printed as bare frames/s."""
    order = record_updates(monkeypatch, lambda trainer: trainer.cfg.model.policy)
    out = tmp_path / "tt.json"
    argv = [a for a in TINY_TRAINING if a != "av_nav"]
    argv[argv.index("--policies") + 1 : argv.index("--policies") + 1] = ["av_nav", "asgf_no_ase"]
    run_benchmark(monkeypatch, train_throughput, *argv, "--json", str(out), "ppo.ppo_epoch=1")
    assert order == ["av_nav", "asgf_no_ase"] * 3  # warm-up, then two timed turns each
    first, second = json.loads(out.read_text())
    assert first["ratio"] == 1.0 and second["ratio"] == pytest.approx(second["fps"] / first["fps"])
    _, *lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("1.00x av_nav") and lines[1].endswith(f"{second['ratio']:6.2f}x av_nav")


def test_a_variant_may_set_the_policy_and_rollout_length_itself(monkeypatch, capsys, tmp_path):
    """--policies and --num-steps set every variant's defaults; a variant's own overrides come after them, so
    two policies can be timed in turns."""
    out = tmp_path / "tt.json"
    variants = ["--variant", "av", "--variant", "ase:model.policy=asgf_no_asgf,ppo.num_steps=8"]
    run_benchmark(monkeypatch, train_throughput, *TINY_TRAINING, *variants, "--updates", "1", "--json", str(out))
    av, ase = json.loads(out.read_text())
    assert (av["policy"], av["num_steps"], ase["policy"], ase["num_steps"]) == ("av_nav", 4, "asgf_no_asgf", 8)
    _, *lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("av_nav ") and lines[1].startswith("asgf_no_asgf ")


def test_the_ratios_base_is_labelled_by_the_policy_it_ran(monkeypatch, capsys):
    """--policies av_nav with a first variant that sets model.policy used to be labelled av_nav/first."""
    variants = ["--variant", "x:model.policy=asgf_no_asgf", "--variant", "y"]
    run_benchmark(monkeypatch, train_throughput, *TINY_TRAINING, *variants, "--updates", "1", "--warmup", "0")
    _, x, y = capsys.readouterr().out.splitlines()
    assert x.startswith("asgf_no_asgf ") and "1.00x asgf_no_asgf/x" in x
    assert y.startswith("av_nav ") and "x asgf_no_asgf/x  (no overrides)" in y


def test_bad_throughput_arguments_end_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(train_throughput, "load_config", lambda *args: pytest.fail("work started"))
    for argv, message in [
        (["--num-steps", "0"], "--num-steps"),
        (["--num-envs", "-1"], "--num-envs"),
        (["--policies", "av_nav", "ppo.ppo_epoch=1"], "--policies: 'ppo.ppo_epoch=1' looks like a config override"),
        (["--policies", "av_nav", "nope"], "--policies: ['nope'] are not policies"),
        (["--json", str(tmp_path)], "--json"),
        (["--env", "embedded", "--image-size", "64"], "--image-size: not used by --env embedded"),
        (["--image-size", "16"], f"--image-size: must be >= {smallest_visual_size()}"),
    ]:
        with pytest.raises(SystemExit) as stop:
            run_benchmark(monkeypatch, train_throughput, *argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err, argv


def test_each_variant_observes_through_its_own_providers(registry):
    """The observation registry is process-wide: a variant's turn must not use the head (and cache) that
    the variant built after it registered."""
    mine = observations.register_observation("probe", lambda state: 1, lambda world: None, overwrite=True)
    observations.register_observation("probe", lambda state: 2, lambda world: None, overwrite=True)  # another's
    seen = []

    class Trainer:
        device = torch.device("cpu")

        def update_once(self):
            seen.append(observations.get_observation("probe").compute(None))

    contender = train_throughput.Contender("a", [], Trainer(), {"probe": mine})
    assert contender.update() >= 0.0 and seen == [1]


# ------------------------------------------------------------------------------------------ audio-only data
AUDIO_ONLY_ACOUSTICS = cheap_acoustics(sources=4)


@pytest.fixture(scope="module")
def audio_only_root(tmp_path_factory) -> Path:
    """The tiny preset's train and test scenes baked for audio only (layout + acoustics, no views)."""
    root = tmp_path_factory.mktemp("audio_only")
    return bake_audio_only(root, ["tiny_apartment", "tiny_room_test"], AUDIO_ONLY_ACOUSTICS)


def test_cache_hit_rate_runs_on_a_data_root_baked_for_audio_only(audio_only_root, monkeypatch, capsys, tmp_path):
    """A cache that holds every key of the run hits exactly as often as the unbounded one; a smaller one
    never more often."""
    import cache_hit_rate

    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--num-envs", "2", "--steps", "40"]
    out = tmp_path / "hits.json"
    run_benchmark(monkeypatch, cache_hit_rate, *argv, "--windows", "2", "--sizes", "2", "1000", "--json", str(out),
                  *AUDIO_ONLY_ACOUSTICS)  # fmt: skip
    assert "tiny_heard (heard sounds): 1 train scenes" in capsys.readouterr().out
    windows = json.loads(out.read_text())["windows"]
    assert len(windows) == 2 and windows[-1]["distinct"] <= 80
    for row in windows:
        assert row["1000"] == row["unbounded"] and row["2"] <= row["1000"]
    assert windows[-1]["unbounded"] > 0  # 2 agents walking 40 steps revisit states


def test_doa_observation_env_runs_on_a_data_root_baked_for_audio_only(audio_only_root, registry):
    import doa_observation

    args = argparse.Namespace(data_root=str(audio_only_root), config="tiny_heard", split="test", batch=2,
                              overrides=AUDIO_ONLY_ACOUSTICS)  # fmt: skip
    env, _ = doa_observation.env_for(args, torch.device("cpu"))
    obs = env.reset()
    assert set(obs) == {"spectrogram", "doa"} and obs["doa"].shape[0] == 2


def test_goal_loudness_finds_no_goal_quieter_than_a_neighbour_as_rendered_now(audio_only_root, monkeypatch, capsys):
    import goal_loudness

    scene = audio_only_root / "scenes" / "tiny" / "tiny_apartment"
    run_benchmark(monkeypatch, goal_loudness, str(scene))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "simulated paths only" in lines[0]
    assert lines[1].startswith(
        "tiny_apartment, rendered now: goal quieter than its loudest neighbour at 0 of 4 sources"
    )


def test_source_clearance_measures_the_baked_source_nodes(monkeypatch, capsys):
    import source_clearance

    by_spread, nodes = source_clearance.clearances("tiny", 1000)  # more sources than nodes: every node is one
    assert set(by_spread) == {"farthest", "stratified"} and (nodes >= 0.15 - 1e-9).all()
    assert all(np.array_equal(np.sort(sources), np.sort(nodes)) for sources in by_spread.values())
    by_spread, nodes = source_clearance.clearances("tiny", 2)
    assert all(len(two) == 2 * 3 and np.isin(two, nodes).all() for two in by_spread.values())
    run_benchmark(monkeypatch, source_clearance, "--datasets", "tiny", "--sources-per-scene", "2")
    rows = capsys.readouterr().out.splitlines()[-2:]
    for row, (spread, two) in zip(rows, by_spread.items(), strict=True):
        medians = f"{np.median(two):.2f} / {np.median(nodes):.2f} m"
        assert row.startswith(f"| tiny | {spread} | 6 of {len(nodes)} | {medians} |")


def test_ase_attention_weighs_the_pooled_frames_of_the_task_spectrogram(audio_only_root, monkeypatch, capsys):
    import ase_attention

    from asgf_nav.acoustics.rir import SceneRirs
    from asgf_nav.models.ase import default_time_pool
    from asgf_nav.scenes.store import SceneStore
    from asgf_nav.tasks.spectrogram import spectrogram_shape

    scene = audio_only_root / "scenes" / "tiny" / "tiny_apartment"
    _, frames, _ = spectrogram_shape(SceneRirs(SceneStore(scene)).sample_rate)
    weights = ase_attention.attention_weights(scene, 5, seed=0)
    assert weights.shape == (5, -(-frames // default_time_pool(frames)))  # one weight per ASE embedding
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    scene = audio_only_root / "scenes" / "tiny" / "tiny_apartment"
    run_benchmark(monkeypatch, ase_attention, "--scene-dir", str(scene), "--triples", "3")
    assert "tiny_apartment: 3 spectrograms" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ labels
def test_spectrogram_batch_prints_each_time_over_the_defaults(monkeypatch, capsys):
    import spectrogram_batch

    argv = ["--devices", "cpu", "--batches", "2", "--observations", "4", "--rounds", "1", "--rir-seconds", "0.05"]
    run_benchmark(monkeypatch, spectrogram_batch, *argv, "--sample-rate", "8000")
    printed = capsys.readouterr().out
    assert "x default" not in printed and "| time / default's (>1: slower) |" in printed
    table = [
        [c.strip() for c in line.strip("|").split("|")] for line in printed.splitlines() if line.startswith("| cpu")
    ]
    rows = {batch: (float(ms), float(ratio)) for _, batch, ms, ratio in table}  # device, batch, ms, ratio
    default_ms, default_ratio = rows["16 (default)"]
    assert default_ratio == 1.0  # the default's time over its own
    # the times are printed to 0.01 ms: the ratio of the printed times is that far from the exact one
    assert rows["2"][1] == pytest.approx(rows["2"][0] / default_ms, rel=0.02, abs=0.01 + 0.012 / default_ms)


def test_spectrogram_batch_warms_up_every_chunk_shape_it_times(monkeypatch):
    """Only the largest chunk used to be warmed up: the smaller ones paid their first FFTs in the timing."""
    import spectrogram_batch

    calls = []
    from_rirs = spectrogram_batch.TorchSpectrogram.from_rirs

    def recorded(self, sounds, rirs, batch=None):
        calls.append({min(batch, len(rirs) - start) for start in range(0, len(rirs), batch)})  # chunk sizes
        return from_rirs(self, sounds, rirs, batch)

    monkeypatch.setattr(spectrogram_batch.TorchSpectrogram, "from_rirs", recorded)
    batches = [2, 3, 8]
    spectrogram_batch.time_batches(torch.device("cpu"), batches, 5, 1, 8000, 0.02)
    warm, timed = calls[: -len(batches)], calls[-len(batches) :]  # one round: the last calls are timed
    assert timed == [{2, 1}, {3, 2}, {5}]
    assert set().union(*timed) <= set().union(*warm)


def test_cache_hit_rate_windows_cover_every_step_in_as_many_windows_as_asked():
    import cache_hit_rate

    assert cache_hit_rate.window_ends(11, 4) == [2, 5, 8, 11]  # used to be 5 windows of 2, step 11 left out
    assert cache_hit_rate.window_ends(4, 4) == [1, 2, 3, 4] and cache_hit_rate.window_ends(7, 1) == [7]


def test_the_doa_probes_help_says_where_they_cache_their_pools(monkeypatch, capsys):
    import doa_fusion_weights
    from doa_direct_mask_probe import probe_parser

    with pytest.raises(SystemExit):
        run_benchmark(monkeypatch, doa_fusion_weights, "--help")
    for text in (probe_parser(None).format_help(), capsys.readouterr().out):
        flat = " ".join(text.split())
        assert "--pool-dir POOL_DIR where the rendered RIR pools are cached" in flat and "data/doa/pools" in flat


def test_row_gather_checks_both_gathers_agree_and_prints_their_ratio(capsys):
    import row_gather

    assert row_gather.main(["--batch", "4", "--nodes", "3", "--image-size", "8", "--repeats", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["rgb", "depth", "spectrogram"]
    assert all(row.endswith("x") and float(row.split()[-1][:-1]) > 0 for row in rows)


def test_doa_throughput_rows_take_turns_within_each_repeat():
    import doa_train_throughput

    calls = []
    works = [(name, torch.device("cpu"), lambda name=name: calls.append(name)) for name in ("a", "b", "c")]
    seconds = doa_train_throughput.timed_in_turns(works, repeats=3)
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3  # two untimed calls each, then turns
    assert len(seconds) == 3 and all(t >= 0 for t in seconds)


def test_direction_choice_probe_splits_free_field_sources_by_direction():
    """Through the bare HRIRs (no room) the probe's bin split sends nearly all of each source's energy to its
    own direction, so its near-chance split in the test rooms is the rooms', not the split's."""
    import doa_direction_choice_probe as probe

    from asgf_nav.models.doa.classical import hann_stft

    rate = 16000
    hrtf = load_hrtf(rate)
    rng = np.random.default_rng(0)
    azimuths = np.array([60.0, 300.0])
    ipd = probe.template_phase(rate, azimuths)
    for k, azimuth in enumerate(azimuths):
        hrir = hrtf.hrir[hrtf.nearest(np.array([azimuth]), np.array([0.0]))[0]]  # (2, taps)
        noise = rng.standard_normal(rate // 2)
        binaural = np.stack([np.convolve(noise, hrir[ear])[: rate // 2] for ear in range(2)])
        spec = hann_stft(binaural, probe.NFFT, probe.HOP)
        power = (np.abs(spec) ** 2).sum(axis=0)
        for kappa in (0.0, 10.0):
            share = (probe.target_side(spec, ipd[k], ipd[1 - k], kappa) * power).sum() / power.sum()
            assert share > 0.9, (azimuth, kappa, share)


def test_rir_render_times_one_yaw_and_four_in_turns(audio_only_root, monkeypatch, capsys):
    import rir_render

    from asgf_nav.acoustics.rir import SceneRirs
    from asgf_nav.scenes.store import SceneStore

    scene = audio_only_root / "scenes" / "tiny" / "tiny_apartment"
    rirs = SceneRirs(SceneStore(scene))
    source = int(rirs.source_nodes[0])
    one, four = rir_render.time_pairs(rirs, [(n, source) for n in range(4)], warmup=1)
    assert one.shape == four.shape == (3,) and (one > 0).all() and (four > 0).all()  # the warm-up pair untimed
    run_benchmark(monkeypatch, rir_render, "--scene-dir", str(scene), "--pairs", "3", "--warmup", "1")
    out = capsys.readouterr().out
    assert out.startswith("tiny_apartment: 44100 Hz, 3 pairs in turns: 1 yaw ") and "x the time for 4x" in out


def test_stratified_source_nodes_stand_as_near_walls_as_the_average_node() -> None:
    """Farthest-point sampling puts the Replica-like goals near walls (56 % of them within 0.3 m, against
    42 % of all nodes); one node per region brings that share back near all nodes'."""
    from source_clearance import NEAR_WALL_M, clearances

    by_spread, nodes = clearances("replica", 24)
    near = {spread: float(np.mean(values < NEAR_WALL_M)) for spread, values in by_spread.items()}
    everywhere = float(np.mean(nodes < NEAR_WALL_M))
    assert near["farthest"] > everywhere + 0.10
    assert abs(near["stratified"] - everywhere) < 0.07


def test_tail_overlap_finds_the_image_order_repeated_before_version_3_and_not_now(monkeypatch, capsys):
    import tail_overlap

    run_benchmark(monkeypatch, tail_overlap, "--rays", "1000")
    lines = capsys.readouterr().out.splitlines()
    rows = {order: lines[3 * order - 1 : 3 * order + 1] for order in (1, 2, 3)}
    for before, now in rows.values():
        assert "(before)" in before and "(now)" in now
        now_share = [float(v) for v in now.split("whole response")[0].split()[-7:]]
        assert now_share == [0.0] * 7 and now.rstrip().endswith("+0.00")
    before_order_2 = [float(v) for v in rows[2][0].split("whole response")[0].split()[-7:]]
    assert min(before_order_2) > 0.05  # the second-order reflections, in both parts of the response
    assert all(float(v) > 0 for v in rows[2][0].split("dB re now:")[1].split())
