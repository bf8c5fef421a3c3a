"""Bake pools: every result arrives, and workers exit without leaking semaphores."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import time
    from multiprocessing import util

    from asgf_nav.parallel import spawn_imap_unordered

    LOCKS = []

    def job(i):
        # A named semaphore, as tqdm's write lock is in a spawned worker, and a slow exit (as a worker
        # holding a scene has): a worker terminated while it exits never releases the semaphore.
        if not LOCKS:
            LOCKS.append(multiprocessing.get_context("spawn").Lock())
            util.Finalize(None, time.sleep, args=(1.0,), exitpriority=100)
        return i * i

    if __name__ == "__main__":
        print(sorted(spawn_imap_unordered(job, range(6), 2)))
    """
)


def run_source(path: Path, source: str) -> subprocess.CompletedProcess:
    """Write ``source`` to ``path`` and run it to its end (a pool's workers spawn from a real file)."""
    path.write_text(source)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_spawned_workers_exit_cleanly(tmp_path: Path) -> None:
    done = run_source(tmp_path / "pool_job.py", SCRIPT)
    assert done.stdout.strip() == str([i * i for i in range(6)])
    assert "leaked semaphore" not in done.stderr, done.stderr


LOGGING_SCRIPT = textwrap.dedent(
    """
    import logging

    from asgf_nav.logging_utils import setup_logging
    from asgf_nav.parallel import spawn_imap_unordered

    def job(i):
        logging.getLogger("bake").info("job %d baked", i)
        logging.getLogger("bake").debug("job %d details", i)
        return i

    if __name__ == "__main__":
        setup_logging("INFO")
        print(sorted(spawn_imap_unordered(job, range(2), 2)))
    """
)


def test_workers_log_as_their_parent_does(tmp_path: Path) -> None:
    """A spawned worker starts without logging: its INFO lines were lost and its warnings printed bare."""
    done = run_source(tmp_path / "pool_log.py", LOGGING_SCRIPT)
    lines = [line for line in done.stderr.splitlines() if "baked" in line]
    assert sorted(line.split(" INFO bake: ")[-1] for line in lines) == ["job 0 baked", "job 1 baked"], done.stderr
    assert "details" not in done.stderr  # the parent's level, not DEBUG


BLAS_SCRIPT = textwrap.dedent(
    """
    {numpy_first}
    from asgf_nav.devices import usable_cpus
    from asgf_nav.parallel import spawn_imap_unordered

    def blas_threads(_):
        import numpy  # noqa: F401  (loads the BLAS the worker reports on)
        from threadpoolctl import threadpool_info

        return sorted({{pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}})

    if __name__ == "__main__":
        print(usable_cpus(), sorted({{tuple(t) for t in spawn_imap_unordered(blas_threads, range(4), 2)}}))
    """
)


@pytest.mark.parametrize("numpy_first", [True, False], ids=["blas-loaded-before-the-pool", "blas-loaded-by-the-job"])
def test_workers_share_the_cores_for_blas(tmp_path: Path, numpy_first: bool, monkeypatch) -> None:
    from asgf_nav.parallel import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # no user cap on the cores' share

    done = run_source(tmp_path / "blas_job.py", BLAS_SCRIPT.format(numpy_first="import numpy" if numpy_first else ""))
    cores, threads = done.stdout.split(" ", 1)
    assert threads.strip() == str([(worker_threads(2),)])
    assert worker_threads(2) == max(1, int(cores) // 2) and worker_threads(1) == int(cores)


def test_workers_share_the_usable_cores_not_the_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under taskset or a Slurm allocation the process may use fewer cores than the machine has."""
    from asgf_nav import parallel
    from asgf_nav.parallel import worker_threads

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # no user cap on the cores' share
    assert [worker_threads(n) for n in (1, 2, 4, 12)] == [6, 3, 1, 1]


BUSY_POOL_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import time

    from tqdm import tqdm

    from asgf_nav.cli import run_script
    from asgf_nav.parallel import spawn_imap_unordered

    def job(i):
        for _ in tqdm(range(2), desc=f"job {i}", file=sys.stdout):  # a bake's bar: tqdm's write lock
            pass
        print(f"worker {os.getpid()} busy", file=sys.stderr, flush=True)
        time.sleep(120)  # a scene bake: far longer than the test waits
        return i

    if __name__ == "__main__":
        run_script(lambda: list(spawn_imap_unordered(job, range(2), 2)) and 0)
    """
)


def still_running(pids: list[int], within: float) -> list[int]:
    """Those of ``pids`` still running after waiting up to ``within`` seconds for them to end. A zombie (ended,
    not yet reaped by whoever inherited it) has ended."""

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + within
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if running(pid)]


def start_script(tmp_path: Path, name: str, source: str, **popen: object) -> subprocess.Popen:
    """``source`` written to ``tmp_path / name`` and started, its stderr piped for the test to read."""
    script = tmp_path / name
    script.write_text(source)
    return subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, **popen
    )


def start_busy_pool(tmp_path: Path, **popen: object) -> tuple[subprocess.Popen, list[int]]:
    """A script whose two pool workers are busy baking, and their pids once both have started."""
    import re

    process = start_script(tmp_path, "busy_pool.py", BUSY_POOL_SCRIPT, **popen)
    workers: list[int] = []
    for line in process.stderr:
        workers += [int(pid) for pid in re.findall(r"worker (\d+) busy", line)]
        if len(workers) == 2:
            break
    if len(workers) != 2:
        process.kill()
        raise AssertionError("the workers never started")
    return process, workers


def test_a_script_stopped_by_sigterm_takes_its_pool_workers_with_it(tmp_path: Path) -> None:
    """A scheduler's SIGTERM to a bake script must not leave its workers baking on, orphaned."""
    import os
    import signal

    process, workers = start_busy_pool(tmp_path)
    alive: list[int] = []
    try:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
        alive = still_running(workers, within=10)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {sorted(alive)} outlived the stopped script"
    assert returncode == 128 + signal.SIGTERM  # SystemExit from the handler, not death by the signal


def test_ctrl_c_stops_a_pool_without_worker_tracebacks_or_leaked_semaphores(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole process group: the workers must leave it to the parent."""
    import os
    import signal

    process, _ = start_busy_pool(tmp_path, start_new_session=True)
    with group_killed_if_left_running(process):
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "interrupted (Ctrl-C)" in stderr, stderr
    assert "SpawnPoolWorker" not in stderr and "Traceback" not in stderr, stderr
    assert "leaked semaphore" not in stderr, stderr


IDLE_WORKER_SCRIPT = textwrap.dedent(
    """
    import faulthandler
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # parent and workers (they import this file)

    from asgf_nav.cli import run_script
    from asgf_nav.parallel import spawn_imap_unordered

    def job(task):
        kind, flag = task
        if kind == "long":  # the other worker's job: it cannot take this one too
            Path(flag).touch()
            time.sleep(120)
        while not Path(flag).exists():
            time.sleep(0.01)
        return os.getpid()

    def main():
        flag = os.path.join(os.path.dirname(os.path.abspath(__file__)), "long job started")  # the test's tmp_path
        for pid in spawn_imap_unordered(job, [("short", flag), ("long", flag)], 2):
            print(f"one result from {pid}", file=sys.stderr, flush=True)  # that worker now waits for a task

    if __name__ == "__main__":
        run_script(main)
    """
)


def start_idle_worker_script(tmp_path: Path, source: str = IDLE_WORKER_SCRIPT) -> tuple[subprocess.Popen, int]:
    """Run ``source`` in a session of its own; once one worker is idle (back in the task queue's get(),
    holding its lock), return the process and that worker's pid."""
    import re

    process = start_script(tmp_path, "idle_worker.py", source, start_new_session=True)
    try:
        idle = int(re.search(r"one result from (\d+)", process.stderr.readline()).group(1))
    except BaseException:
        with group_killed_if_left_running(process):
            raise
    wait_until_reading_the_task_pipe(idle)
    return process, idle


def wait_until_reading_the_task_pipe(pid: int, within: float = 10.0) -> None:
    """Wait for worker ``pid`` to block in the task queue's pipe read (it then holds the queue's lock). On a
    kernel that never names where a process sleeps (wchan always "0") the wait is the whole ``within``."""
    deadline, where, named = time.monotonic() + within, "0", False
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as wchan:
                where = wchan.read()
        except OSError:
            where = "0"
        if where.endswith(("pipe_read", "pipe_wait")):  # pipe_wait before Linux 5.8
            return
        named = named or where not in ("", "0")
        time.sleep(0.01)
    assert not named, f"worker {pid} did not go back to the task queue within {within} s (it sleeps in {where!r})"


def communicate_or_explain_the_hang(process: subprocess.Popen, timeout: float) -> str:
    """``process``'s stderr once it ends; if it is still running after ``timeout`` s, fail with what each
    process of its session is waiting in (every thread's kernel wait channel) and the Python stacks that
    the script's SIGUSR1 handler (faulthandler) prints, so that a rare hang leaves something to read."""
    import os
    import signal

    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        pass
    waits = []
    for entry in sorted(os.listdir("/proc")) if os.path.isdir("/proc") else []:
        try:
            if not entry.isdigit() or os.getsid(int(entry)) != process.pid:
                continue
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            threads = {
                task: Path(f"/proc/{entry}/task/{task}/wchan").read_text() or "?"
                for task in sorted(os.listdir(f"/proc/{entry}/task"))
            }
        except OSError:  # the process ended meanwhile
            continue
        waits.append(f"pid {entry} ({command.strip()}): threads in {threads}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGUSR1)
    time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    stderr = process.communicate(timeout=10)[1]
    pytest.fail(f"still running after {timeout} s;\n" + "\n".join(waits) + f"\nstderr, with the stacks:\n{stderr}")


def test_a_hung_script_fails_with_its_waits_and_python_stacks(tmp_path: Path) -> None:
    """The pool tests' diagnosis of a hang names every process of the session, where it waits, and its stack."""
    hang = (
        "import faulthandler, signal, sys, time\n"
        "faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "time.sleep(600)\n"
    )
    process = start_script(tmp_path, "hang.py", hang, start_new_session=True)
    with group_killed_if_left_running(process):
        assert process.stderr.readline() == "ready\n"
        with pytest.raises(pytest.fail.Exception) as failed:
            communicate_or_explain_the_hang(process, timeout=0.2)
    message = str(failed.value)
    assert f"pid {process.pid} (" in message and "hang.py" in message and "threads in" in message, message
    assert "(most recent call first)" in message and 'hang.py", line 4' in message, message
    assert process.returncode is not None  # killed after the diagnosis


@contextlib.contextmanager
def group_killed_if_left_running(process: subprocess.Popen) -> Iterator[None]:
    """Kill ``process``'s whole session group if the block leaves it running (a failed or timed-out test)."""
    import os
    import signal

    try:
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_sigterm_to_the_whole_process_group_stops_a_pool_with_an_idle_worker(tmp_path: Path) -> None:
    """Slurm and ``timeout`` signal the whole group: an idle worker (it holds the pool's task-queue lock
    while it waits) killed outright would leave the parent's terminate() waiting for that lock forever."""
    import os
    import signal

    process, _ = start_idle_worker_script(tmp_path)
    with group_killed_if_left_running(process):
        os.killpg(process.pid, signal.SIGTERM)
        stderr = communicate_or_explain_the_hang(process, timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "leaked semaphore" not in stderr, stderr
    assert "kept the task queue's lock" not in stderr, stderr  # the idle worker unwound, releasing it
    assert stderr.rstrip().endswith("terminated (SIGTERM)"), stderr  # one line says why it ended


SECOND_SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os
    import signal
    import sys
    import time

    from asgf_nav.parallel import exit_on_sigterm

    exit_on_sigterm()
    try:
        print("ready", file=sys.stderr, flush=True)
        time.sleep(60)
    finally:  # the clean-up a worker's unwinding runs (atomic_write deleting its temporary file)
        os.kill(os.getpid(), signal.SIGTERM)  # the parent's terminate(), right after the group's signal
        time.sleep(0.2)
        print("cleaned up", file=sys.stderr, flush=True)
    """
)

DROPPED_EXIT_SCRIPT = textwrap.dedent(
    """
    import signal
    import sys
    import time

    from asgf_nav import parallel

    parallel.WORKER_EXIT_GRACE_S = 30
    parallel.exit_on_sigterm()

    class Dropper:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # its SystemExit, raised inside __del__, is only printed

    Dropper()
    try:
        print("ready", file=sys.stderr, flush=True)  # the test's SIGTERM plays the parent's terminate()
        time.sleep(60)
    finally:
        print("cleaned up", file=sys.stderr, flush=True)
    """
)

SWALLOWED_EXIT_SCRIPT = textwrap.dedent(
    """
    import signal
    import sys
    import time

    from asgf_nav import parallel

    parallel.WORKER_EXIT_GRACE_S = 1
    parallel.exit_on_sigterm()
    try:
        signal.raise_signal(signal.SIGTERM)
    except BaseException:  # a library's bare except
        pass
    print("exit swallowed", file=sys.stderr, flush=True)
    time.sleep(60)
    """
)


def _run_until_exit(tmp_path: Path, source: str, timeout: float) -> tuple[int, str]:
    """Run ``source``; once it prints "ready", send it a SIGTERM; its exit status and stderr."""
    import os
    import signal

    process = start_script(tmp_path, "worker.py", source)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "ready" in line:
                os.kill(process.pid, signal.SIGTERM)
                break
        _, rest = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(lines) + rest


def test_a_worker_unwinding_from_a_sigterm_finishes_its_clean_up_through_a_second_one(tmp_path: Path) -> None:
    """A scheduler's SIGTERM to the group is followed by the parent's terminate(); the second must not cut
    the first's clean-up short (nor print "Exception ignored" when it lands in a weakref callback)."""
    import signal

    returncode, stderr = _run_until_exit(tmp_path, SECOND_SIGTERM_SCRIPT, timeout=30)
    assert returncode == 128 + signal.SIGTERM, stderr
    assert "cleaned up" in stderr and "Traceback" not in stderr, stderr


ENDING_NORMALLY_SCRIPT = textwrap.dedent(
    """
    import atexit
    import sys
    import time

    from asgf_nav.parallel import exit_on_sigterm

    def earlier_callback():  # registered first, as logging's shutdown is: it runs after the worker's own
        print("ready", file=sys.stderr, flush=True)  # the test's SIGTERM plays the parent's terminate()
        time.sleep(1.0)
        print("exit callbacks done", file=sys.stderr, flush=True)

    atexit.register(earlier_callback)
    exit_on_sigterm()
    """
)


def test_a_worker_ending_normally_is_not_interrupted_in_its_exit_callbacks(tmp_path: Path) -> None:
    """A worker that took the pool's end-of-work sentinel is ending when the parent's terminate() reaches
    it; a SIGTERM raised inside logging's exit callback was printed as "Exception ignored in atexit
    callback" and cut that callback short."""
    returncode, stderr = _run_until_exit(tmp_path, ENDING_NORMALLY_SCRIPT, timeout=20)
    assert returncode == 0, stderr
    assert "exit callbacks done" in stderr and "Exception ignored" not in stderr, stderr


def test_a_sigterm_on_entering_the_first_exit_callback_does_not_interrupt_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that ends normally can get the parent's terminate() in the instant its exit callbacks begin;
    Python then runs the handler on entering ``_ending_anyway``, before that marks the process as ending.
    The handler sees where it landed and lets the exit go on (it raised SystemExit there, printed as
    "Exception ignored in atexit callback"); anywhere else the first SIGTERM still unwinds the worker."""
    import signal
    from types import SimpleNamespace

    from asgf_nav import parallel

    alarms: list[int] = []
    monkeypatch.setattr(parallel.signal, "alarm", alarms.append)
    monkeypatch.setattr(parallel, "_exiting", False)
    parallel._exit_on_sigterm(signal.SIGTERM, SimpleNamespace(f_code=parallel._ending_anyway.__code__))
    assert parallel._exiting and alarms == [parallel.WORKER_EXIT_GRACE_S]
    parallel._exit_on_sigterm(signal.SIGTERM, None)  # later signals are ignored while it ends
    monkeypatch.setattr(parallel, "_exiting", False)  # the same on entering the join of threads, which comes first
    parallel._exit_on_sigterm(signal.SIGTERM, SimpleNamespace(f_code=threading._shutdown.__code__))
    assert parallel._exiting and alarms == [parallel.WORKER_EXIT_GRACE_S] * 2
    monkeypatch.setattr(parallel, "_exiting", False)
    with pytest.raises(SystemExit) as exit_info:
        parallel._exit_on_sigterm(signal.SIGTERM, SimpleNamespace(f_code=parallel.exit_on_sigterm.__code__))
    assert exit_info.value.code == 128 + signal.SIGTERM and parallel._exiting


def test_a_worker_whose_sigterm_exit_was_dropped_exits_cleanly_at_the_next(tmp_path: Path) -> None:
    """Python drops an exception raised inside ``__del__`` or a weakref callback: the worker carries on, and
    the parent's terminate() that follows must still unwind it (not be ignored as a second signal)."""
    import signal

    returncode, stderr = _run_until_exit(tmp_path, DROPPED_EXIT_SCRIPT, timeout=20)
    assert "Exception ignored" in stderr  # the dropped exit really happened
    assert returncode == 128 + signal.SIGTERM, stderr
    assert "cleaned up" in stderr, stderr


LOST_SIGTERM_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import signal
    import sys
    import threading
    import time

    from asgf_nav import parallel

    parallel.exit_on_sigterm()

    def take_the_signal():
        time.sleep(0.5)  # the main thread waits for the lock by then
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # the kernel handed the SIGTERM to this thread

    lock = multiprocessing.get_context("spawn").Lock()
    lock.acquire()  # held for good, as the parent's terminate() holds the task queue's lock
    threading.Thread(target=take_the_signal, daemon=True).start()
    try:
        print("ready", file=sys.stderr, flush=True)
        lock.acquire()  # an idle worker's wait for its next task
    finally:
        print("cleaned up", file=sys.stderr, flush=True)
    """
)


def test_a_sigterm_the_main_thread_did_not_wake_for_still_ends_the_worker(tmp_path: Path) -> None:
    """Python runs a signal's handler in the main thread only, when it next runs bytecode: a SIGTERM taken
    by another thread, or one that lands just before the main thread blocks, leaves it waiting for a lock
    (an idle worker waits for the task queue's lock that the parent's terminate() holds) and the parent's
    join() waiting for that worker forever. The worker's own thread signals the main thread again."""
    import signal

    process = start_script(tmp_path, "worker.py", LOST_SIGTERM_SCRIPT, start_new_session=True)
    with group_killed_if_left_running(process):
        ready = process.stderr.readline()  # timed from here: a loaded machine's interpreter start-up is not the test's
        stderr = ready + communicate_or_explain_the_hang(process, timeout=8)  # SIGALRM's backstop would take 10 s
    returncode = process.returncode
    assert returncode == 128 + signal.SIGTERM, stderr
    assert "cleaned up" in stderr and "Traceback" not in stderr, stderr


FORKED_SCRIPT = textwrap.dedent(
    """
    import os
    import signal
    import sys
    import threading
    import time

    from asgf_nav import parallel

    parallel.exit_on_sigterm()
    parallel.exit_on_sigterm()  # a second call keeps the first one's thread
    print("stop threads:", sum(t.name == "deliver-stops" for t in threading.enumerate()), file=sys.stderr)
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    time.sleep(0.5)
    os.kill(child, signal.SIGTERM)  # the child alone
    _, status = os.waitpid(child, 0)
    time.sleep(2 * parallel.STOP_RESEND_S)  # time for a stray stop to reach this process
    print("child ended by", os.waitstatus_to_exitcode(status), "and the parent lives on", file=sys.stderr)
    """
)


def test_a_sigterm_to_a_forked_child_leaves_the_parent_running(tmp_path: Path) -> None:
    """A forked child inherits the signal wakeup pipe but not its reader: its SIGTERM's byte must not reach
    the parent's reader and stop the parent."""
    import signal

    script = tmp_path / "forks.py"
    script.write_text(FORKED_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stop threads: 1" in done.stderr, done.stderr
    assert f"child ended by {128 + signal.SIGTERM} and the parent lives on" in done.stderr, done.stderr


def test_a_worker_whose_sigterm_exit_was_swallowed_still_ends(tmp_path: Path) -> None:
    """Swallowed by a bare ``except``, the exit leaves the worker ignoring SIGTERM; it would outlive the
    parent's terminate() and hang its join(). SIGALRM ends it."""
    import signal

    returncode, stderr = _run_until_exit(tmp_path, SWALLOWED_EXIT_SCRIPT, timeout=30)
    assert "exit swallowed" in stderr, stderr
    assert returncode == -signal.SIGALRM, stderr


@pytest.mark.parametrize(
    ("signum", "how"),
    [(9, "killed by SIGKILL"), (15, "exit code 143, stopped by SIGTERM")],
    ids=["sigkill", "sigterm"],
)
def test_a_worker_killed_on_its_own_ends_the_bake_with_an_error_not_a_wait_forever(
    tmp_path: Path, signum: int, how: str
) -> None:
    """The out-of-memory killer (or a signal meant for one worker) takes one worker: Pool replaces it and its
    job never returns. The caller gets one error line naming the worker and the signal, and the other
    worker stops too."""
    import os
    import signal

    process, workers = start_busy_pool(tmp_path, start_new_session=True)
    with group_killed_if_left_running(process):
        os.kill(workers[0], signum)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2, stderr
    assert f"error: a worker process (pid {workers[0]}) ended, {how}" in stderr, stderr
    assert "Traceback" not in stderr and "leaked semaphore" not in stderr, stderr
    if still_running(workers[1:], within=10):
        os.kill(workers[1], signal.SIGKILL)
        pytest.fail("the other worker outlived the failed bake")


def test_a_worker_killed_while_it_held_the_task_queue_lock_does_not_hang_the_pools_terminate(
    tmp_path: Path,
) -> None:
    """An idle worker waits for a task holding the task queue's lock; killed outright there (the OOM killer),
    it never releases it, and the stdlib's terminate() would wait for the lock forever."""
    import os
    import signal

    short_wait = "import sys\nfrom asgf_nav import parallel\nparallel.QUEUE_LOCK_WAIT_S = 1\n"
    process, idle = start_idle_worker_script(tmp_path, IDLE_WORKER_SCRIPT.replace("import sys\n", short_wait, 1))
    with group_killed_if_left_running(process):
        os.kill(idle, signal.SIGKILL)
        stderr = communicate_or_explain_the_hang(process, timeout=30)
    assert process.returncode == 2, stderr
    assert f"error: a worker process (pid {idle}) ended, killed by SIGKILL" in stderr, stderr
    assert "kept the task queue's lock" in stderr and "Traceback" not in stderr, stderr


def test_workers_stop_when_their_parent_is_killed_outright(tmp_path: Path) -> None:
    """A SIGKILL runs no clean-up in the parent; its workers must not bake on, orphaned."""
    import os
    import signal

    process, workers = start_busy_pool(tmp_path, start_new_session=True)
    try:
        process.kill()
        process.wait(timeout=30)
        alive = still_running(workers, within=15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert not alive, f"workers {sorted(alive)} outlived their killed parent"


def test_a_pool_whose_jobs_outlast_the_poll_interval_still_returns_every_result(tmp_path):
    """Jobs slower than the pool's 0.2 s poll all come back (the other tests' jobs are instant)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "slow_jobs.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from asgf_nav.parallel import spawn_imap_unordered

            def job(i):
                time.sleep(0.5)  # longer than the pool's 0.2 s poll
                return i * i

            if __name__ == "__main__":
                print(sorted(spawn_imap_unordered(job, range(6), 2)))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 4, 9, 16, 25]"


class _Worker:
    """What ``_check_workers`` reads of a pool worker: its pid and exit code (None while it runs)."""

    def __init__(self, pid: int, exitcode: int | None = None) -> None:
        self.pid, self.exitcode = pid, exitcode


@pytest.mark.parametrize(
    ("exitcode", "how"),
    [
        (-9, "killed by SIGKILL (SIGKILL is what the kernel's out-of-memory killer sends)"),
        (-11, "killed by SIGSEGV,"),
        (143, "exit code 143, stopped by SIGTERM,"),
        (1, "exit code 1,"),
        (0, "exit code 0,"),  # a job's sys.exit(0) ends the worker too, and its job never returns
    ],
)
def test_a_worker_that_ended_is_reported_with_how_it_ended(exitcode: int, how: str) -> None:
    """Every ended worker, whatever its exit code, is an error naming its pid and how it ended; only a
    SIGKILL gets the out-of-memory hint."""
    import types

    from asgf_nav.parallel import WorkerDiedError, _check_workers

    pool = types.SimpleNamespace(_pool=[_Worker(101), _Worker(102, exitcode)])
    with pytest.raises(WorkerDiedError) as error:
        _check_workers(pool, {})
    assert str(error.value).startswith(f"a worker process (pid 102) ended, {how}")
    assert ("out-of-memory" in str(error.value)) == (exitcode == -9)


def test_a_dead_worker_the_pool_already_replaced_is_still_reported() -> None:
    """The pool swaps a dead worker for a new one within 0.1 s; the one seen earlier must still be noticed."""
    import types

    from asgf_nav.parallel import WorkerDiedError, _check_workers

    first = _Worker(101)
    pool = types.SimpleNamespace(_pool=[first, _Worker(102)])
    started: dict = {}
    _check_workers(pool, started)  # all running: nothing to report
    first.exitcode = -9
    pool._pool = [_Worker(103), pool._pool[1]]  # the replacement; the dead worker is no longer listed
    with pytest.raises(WorkerDiedError, match=r"\(pid 101\) ended, killed by SIGKILL"):
        _check_workers(pool, started)


def test_workers_ended_by_this_processs_own_stop_raise_the_stop_not_a_worker_error(monkeypatch) -> None:
    """A SIGTERM to the whole group ends the workers too: the stop (exit 143) is raised, not WorkerDiedError."""
    import signal
    import types

    from asgf_nav import termination
    from asgf_nav.parallel import _check_workers

    monkeypatch.setattr(termination, "_received", signal.SIGTERM)  # the handler recorded the group's SIGTERM
    pool = types.SimpleNamespace(_pool=[_Worker(101, 128 + signal.SIGTERM)])
    with pytest.raises(SystemExit) as stop:
        _check_workers(pool, {})
    assert stop.value.code == 128 + signal.SIGTERM


def test_a_log_line_goes_out_in_one_write_with_its_newline(monkeypatch) -> None:
    """stderr writes through: a line and its newline written apart interleaved with another bake worker's
    line ("job 0 baked14:41:38 INFO bake: job 1 baked")."""
    import logging

    from asgf_nav.logging_utils import TqdmHandler

    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            if text:
                writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Recorder())
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.emit(logging.LogRecord("bake", logging.INFO, __file__, 1, "job %d baked", (0,), None))
    assert writes == ["bake: job 0 baked\n"]
