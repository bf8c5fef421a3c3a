"""Test helper: stop a script with a signal at a chosen point of its log."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path


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
