"""ASGF-Nav: audio-visual navigation with audio spatial state guided fusion."""

import sys

__version__ = "0.1.0"

if sys.platform == "win32":  # said once, here, rather than as a missing fcntl deep inside the first import
    raise ImportError(
        "ASGF-Nav runs on Linux and macOS: it needs POSIX file locks, signals and process groups "
        "(fcntl, SIGKILL, setsid). On Windows, run it under WSL2."
    )
