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
