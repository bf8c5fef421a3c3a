"""SIGTERM and Ctrl-C end a run even when the exception their handler raises is swallowed."""

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from asgf_nav.termination import install_stop_handlers, raise_if_stopped

    install_stop_handlers()
    raise_if_stopped()  # nothing received yet: no exception
    try:
        os.kill(os.getpid(), int(sys.argv[1]))
    except BaseException:  # a library-style swallow of the first exception
        pass
    print("still running", flush=True)
    raise_if_stopped()
    print("not reached", flush=True)
    """
)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_swallowed_stop_signal_is_raised_again(stop):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(int(stop))], capture_output=True, text=True, timeout=60)
    # SystemExit(143) for SIGTERM; an uncaught KeyboardInterrupt makes Python end itself with SIGINT
    assert done.returncode == (128 + stop if stop == signal.SIGTERM else -stop), done.stderr
    assert done.stdout.splitlines() == ["still running"]
    assert "exception got lost" in done.stderr


DEFERRED_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from asgf_nav.termination import install_stop_handlers, raise_if_stopped, stop_between_updates, stop_requested

    install_stop_handlers()
    stop = int(sys.argv[1])
    with stop_between_updates():
        os.kill(os.getpid(), stop)  # the first signal is only recorded
        print("recorded" if stop_requested() else "missed", flush=True)
        if sys.argv[2] == "twice":
            time.sleep(0.6)  # past the half second in which a repeated SIGTERM is the same stop
            try:
                os.kill(os.getpid(), stop)  # a second one raises at once
            except BaseException as exc:
                print("raised at once:", type(exc).__name__, flush=True)
                raise
        raise_if_stopped()  # the loop's safe point
        print("not reached", flush=True)
    """
)


@pytest.mark.parametrize("times", ["once", "twice"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_signal_inside_a_training_loop_waits_for_its_safe_point(stop, times):
    done = subprocess.run(
        [sys.executable, "-c", DEFERRED_SCRIPT, str(int(stop)), times], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == (128 + stop if stop == signal.SIGTERM else -stop), done.stderr
    expected = ["recorded"]
    if times == "twice":
        expected.append("raised at once: " + ("SystemExit" if stop == signal.SIGTERM else "KeyboardInterrupt"))
    assert done.stdout.splitlines() == expected
    assert "stopping after this update" in done.stderr
    assert "exception got lost" not in done.stderr  # a deferred signal is not a lost one


MID_LOG_SCRIPT = textwrap.dedent(
    """
    import logging, os, signal, sys
    from asgf_nav.termination import install_stop_handlers, stop_between_updates, stop_requested

    class SignalledStream:
        '''A log file whose first write is interrupted by SIGTERM, as a scheduler's signal may land.'''
        def __init__(self):
            self.inside = False
            self.sent = False
            self.lines = []
        def write(self, text):
            if self.inside:
                raise RuntimeError("reentrant call inside the log stream")
            self.inside = True
            try:
                if not self.sent:
                    self.sent = True
                    os.kill(os.getpid(), signal.SIGTERM)
                self.lines.append(text)
            finally:
                self.inside = False
        def flush(self):
            pass

    stream = SignalledStream()
    log = logging.getLogger()  # every logger's records, the handler's own too, reach this one stream
    log.addHandler(logging.StreamHandler(stream))
    install_stop_handlers()
    with stop_between_updates():
        log.warning("update 1 done")
        print("recorded" if stop_requested() else "missed", flush=True)
    print("".join(stream.lines).strip(), flush=True)
    """
)


def test_a_signal_that_lands_inside_a_log_write_does_not_log_from_the_handler():
    """The handler may interrupt a log handler mid-write; logging from it again raised RuntimeError in CI."""
    done = subprocess.run([sys.executable, "-c", MID_LOG_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "reentrant" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.splitlines() == ["recorded", "update 1 done"]
    assert "SIGTERM: stopping after this update" in done.stderr


POLL_SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from asgf_nav.config import load_config
    from asgf_nav.scenes.background import ScenePool
    from asgf_nav.termination import install_stop_handlers

    class SignalInsidePoll(subprocess.Popen):
        '''CPython's poll() takes its wait lock just before its ``try``: a stop landing between the two, as
        the first one does here, would leave the lock taken and every later wait() spinning to its timeout.'''
        signalled = False

        def poll(self):
            if not self._waitpid_lock.acquire(False):
                return None
            if not self.signalled:
                self.signalled = True
                os.kill(os.getpid(), int(sys.argv[1]))
            self._waitpid_lock.release()
            return super().poll()

    install_stop_handlers()
    pool = ScenePool(load_config("tiny_heard", [f"scenes.data_root={sys.argv[2]}"]), "tiny")
    child = pool.process = SignalInsidePoll(["sleep", "120"], start_new_session=True)
    start = time.monotonic()
    try:
        if sys.argv[3] == "check_build":
            pool.check_build()  # as the trainer polls the build between updates
        else:
            pool.stop()  # a second stop while a stopped run cleans up
        print("not stopped", flush=True)
    except BaseException as exc:
        if sys.argv[3] == "check_build":
            pool.stop()  # the run's clean-up
        ended = child.wait(timeout=10)
        print(f"{type(exc).__name__}; builder ended with {ended} in {time.monotonic() - start:.0f} s")
    """
)


@pytest.mark.parametrize("where", ["check_build", "stop"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_a_stop_that_lands_inside_polling_the_background_build_still_stops_it_at_once(stop, where, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", POLL_SCRIPT, str(int(stop)), str(tmp_path), where],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    exception = "SystemExit" if stop == signal.SIGTERM else "KeyboardInterrupt"
    assert done.stdout.splitlines() == [f"{exception}; builder ended with -15 in 0 s"], done.stderr


AGAIN_SCRIPT = textwrap.dedent(
    """
    import os, signal
    from asgf_nav.termination import install_stop_handlers, raise_if_stopped, stop_between_updates, stop_requested

    install_stop_handlers()
    for run in ("first", "second"):  # a notebook: a stopped run, then the same run resumed in one process
        try:
            with stop_between_updates():
                print(run, "starts stopped" if stop_requested() else "starts", flush=True)
                os.kill(os.getpid(), signal.SIGINT)
                raise_if_stopped()
        except KeyboardInterrupt:
            print(run, "stopped", flush=True)
    """
)


def test_a_run_started_again_in_the_same_process_after_a_stop_does_not_stop_at_once():
    done = subprocess.run([sys.executable, "-c", AGAIN_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["first starts", "first stopped", "second starts", "second stopped"], done.stderr


SCOPED_SCRIPT = textwrap.dedent(
    """
    import os, signal
    from asgf_nav.termination import stop_handling, stop_requested

    before = signal.getsignal(signal.SIGINT)
    try:
        with stop_handling():  # run_training's: a Ctrl-C during its first bake, before the training loop
            os.kill(os.getpid(), signal.SIGINT)
            print("not reached", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    print("stop still recorded" if stop_requested() else "nothing recorded", flush=True)
    print("handlers from before" if signal.getsignal(signal.SIGINT) is before else "handlers left", flush=True)
    """
)


def test_a_run_in_a_notebook_leaves_no_stop_and_no_handlers_behind():
    done = subprocess.run([sys.executable, "-c", SCOPED_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["stopped", "nothing recorded", "handlers from before"], done.stderr


def test_a_signal_held_by_nested_uninterrupted_blocks_is_raised_only_when_the_outermost_ends():
    """A SIGTERM arriving inside nested uninterrupted() blocks is held through the inner block's end
    (ScenePool.stop polls the builder inside its own uninterrupted block) and raised as
    SystemExit(128 + SIGTERM) only when the outermost block ends."""
    import os
    import signal

    from asgf_nav.termination import stop_handling, uninterrupted

    reached = []
    with stop_handling():
        with pytest.raises(SystemExit) as info:
            with uninterrupted():
                with uninterrupted():
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(1000):  # give the interpreter bytecodes at which to run the handler
                        pass
                reached.append("after inner block")
        assert info.value.code == 128 + signal.SIGTERM
    assert reached == ["after inner block"]


def _let_the_handler_run() -> None:
    """Give the interpreter bytecodes at which to run a signal handler for a signal sent to this process."""
    for _ in range(1000):
        pass


def _raised_by_signal(signum: int) -> BaseException | None:
    """Send ``signum`` to this process and return what its handler raised (None when it only recorded it)."""
    import os

    try:
        os.kill(os.getpid(), signum)
        _let_the_handler_run()
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt must not reach pytest itself
        return exc
    return None


def test_a_signal_after_the_training_loop_raises_at_once() -> None:
    """Leaving stop_between_updates ends the deferral: a SIGTERM during evaluation or clean-up after the
    loop stops the run at once instead of waiting for a safe point that never comes."""
    from asgf_nav.termination import stop_between_updates, stop_handling

    with stop_handling():
        with stop_between_updates():
            pass
        raised = _raised_by_signal(signal.SIGTERM)
    assert isinstance(raised, SystemExit) and raised.code == 128 + signal.SIGTERM


def test_the_first_stop_signal_is_the_one_raised_at_the_safe_point() -> None:
    """A SIGTERM recorded in the loop, then a Ctrl-C (raised at once but swallowed): the safe point raises
    the first signal, SystemExit(128 + SIGTERM), so the scheduler sees the exit status of its own stop."""
    from asgf_nav.termination import raise_if_stopped, stop_between_updates, stop_handling

    with stop_handling():
        with stop_between_updates():
            assert _raised_by_signal(signal.SIGTERM) is None  # recorded only
            assert isinstance(_raised_by_signal(signal.SIGINT), KeyboardInterrupt)  # the second one at once
            try:
                raise_if_stopped()
                raised = None
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt must not reach pytest itself
                raised = exc
    assert isinstance(raised, SystemExit) and raised.code == 128 + signal.SIGTERM


def test_a_sigterm_delivered_twice_at_once_is_one_stop(monkeypatch) -> None:
    """Slurm signals every process of a job step and torchrun passes its own SIGTERM on, so each DD-PPO rank
    gets two within milliseconds: counted as a second stop, it raised mid all-reduce and lost the update."""
    from asgf_nav import termination
    from asgf_nav.termination import stop_between_updates, stop_handling

    with stop_handling():
        with stop_between_updates():
            assert _raised_by_signal(signal.SIGTERM) is None  # recorded only
            assert _raised_by_signal(signal.SIGTERM) is None  # the same stop again
            monkeypatch.setattr(termination, "REPEAT_WINDOW_S", 0.0)  # as if it came later: a second stop
            raised = _raised_by_signal(signal.SIGTERM)
            assert isinstance(raised, SystemExit) and raised.code == 128 + signal.SIGTERM


def test_installing_the_stop_handlers_forgets_a_stop_of_an_earlier_run() -> None:
    """A Ctrl-C swallowed in an earlier run of the same process (a notebook) must not stop the next run."""
    from asgf_nav.termination import install_stop_handlers, stop_requested

    install_stop_handlers()
    assert isinstance(_raised_by_signal(signal.SIGINT), KeyboardInterrupt)  # swallowed here
    assert stop_requested()
    install_stop_handlers()
    assert not stop_requested()


def test_a_run_started_from_a_worker_thread_installs_no_handlers() -> None:
    """Python accepts signal handlers only on the main thread: stop_handling in a worker thread is a no-op,
    not a ValueError that keeps the run from starting."""
    import threading

    from asgf_nav.termination import stop_handling

    before = signal.getsignal(signal.SIGTERM)
    outcome: list[object] = []

    def run() -> None:
        try:
            with stop_handling():
                outcome.append("ran")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=30)
    assert outcome == ["ran"]
    assert signal.getsignal(signal.SIGTERM) is before
