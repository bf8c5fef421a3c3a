"""Test helpers: stop a script with a signal at a chosen point of its log; wait for a log line of a thread."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


def stop_when(
    command: list[str], marker: str, stop: signal.Signals, cwd: Path | None = None, timeout: float = 300
) -> tuple[int, str]:
    """Run ``command``, send ``stop`` once a line of its stderr contains ``marker``; (return code, stderr).

    A script that hangs is killed after ``timeout`` seconds in all, so the test fails instead of hanging CI.
    """
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=cwd)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    output: list[str] = []
    try:
        for line in process.stderr:
            output.append(line)
            if marker in line:
                process.send_signal(stop)
                break
        output.extend(process.stderr)  # to the end, so a full pipe cannot block the script's exit
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    log = "".join(output)
    assert any(marker in line for line in output), f"{marker!r} never logged:\n{log[-4000:]}"
    assert returncode != -signal.SIGKILL, f"killed after {timeout} s without exiting:\n{log[-4000:]}"
    return returncode, log


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, thread: threading.Thread, timeout: float = 60) -> None:
    """Return once a captured record contains ``text`` (logged by ``thread``, still running); fail after ``timeout``.

    Waiting for the line, not a fixed sleep, makes "it waits" tests hold on a slow machine and fail where the
    thread never reaches the wait (it would still be running its wrong path after a short sleep).
    """
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert thread.is_alive(), f"the thread ended without logging {text!r}"
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout} s"
        time.sleep(0.01)
