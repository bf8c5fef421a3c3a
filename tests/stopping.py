"""Test helper: stop a script with a signal at a chosen point of its log."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def stop_when(
    command: list[str], marker: str, stop: signal.Signals, cwd: Path | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run ``command``, send ``stop`` once a line of its stderr contains ``marker``; (return code, stderr)."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=cwd)
    output: list[str] = []
    try:
        for line in process.stderr:
            output.append(line)
            if marker in line:
                process.send_signal(stop)
                break
        assert output and marker in output[-1], f"{marker!r} never logged:\n" + "".join(output)[-4000:]
        output.extend(process.stderr)  # to the end, so a full pipe cannot block the script's exit
        return process.wait(timeout=timeout), "".join(output)
    finally:
        if process.poll() is None:
            process.kill()
