"""SIGTERM ends a run even when the SystemExit its handler raises is swallowed."""

import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal
    from asgf_nav.termination import exit_on_sigterm, raise_if_terminated

    exit_on_sigterm()
    raise_if_terminated()  # nothing received yet: no exit
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except BaseException:  # the library-style swallow of the first exit
        pass
    print("still running", flush=True)
    raise_if_terminated()
    print("not reached", flush=True)
    """
)


def test_swallowed_sigterm_exit_is_raised_again():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stdout.splitlines() == ["still running"]
    assert "exit got lost" in done.stderr
