"""The shared-core warning: a CPU run whose frames/s collapses with several torch threads is told why, once."""

from __future__ import annotations

from asgf_nav.rl.throughput import SharedCoreWatch


def test_a_collapse_held_for_three_updates_is_warned_of_once_naming_the_speeds_and_the_fix() -> None:
    watch = SharedCoreWatch()
    speeds = [40.0, 180.0, 200.0, 190.0, 30.0, 6.5]  # the first updates are slow anyway (cold caches)
    assert [watch.observe(fps, 512 / fps, threads=2, on_cpu=True) for fps in speeds] == [None] * len(speeds)
    message = watch.observe(6.8, 512 / 6.8, threads=2, on_cpu=True)
    assert message is not None
    assert "slowed from 200 to 7 frames/s over the last 3 updates, with 2 torch threads" in message
    assert "train.torch_threads=1" in message
    assert watch.observe(5.0, 512 / 5.0, threads=2, on_cpu=True) is None  # once per run


def test_a_dip_that_recovers_one_thread_or_a_gpu_is_not_warned_of() -> None:
    watch = SharedCoreWatch()
    dips = [200.0, 30.0, 30.0, 190.0, 30.0, 30.0, 200.0]  # checkpoints, a re-baked scene: never three in a row
    assert all(watch.observe(fps, 512 / fps, threads=2, on_cpu=True) is None for fps in dips)
    for threads, on_cpu in ((1, True), (2, False)):  # one thread waits for no other; a GPU run's speed is its own
        other = SharedCoreWatch()
        assert all(other.observe(fps, 512 / fps, threads, on_cpu) is None for fps in (200.0, 5.0, 5.0, 5.0, 5.0))
    tiny = SharedCoreWatch()  # a test's updates of a few milliseconds: their speed is noise
    assert all(tiny.observe(fps, 32 / fps, 2, True) is None for fps in (2000.0, 100.0, 100.0, 100.0, 100.0))
