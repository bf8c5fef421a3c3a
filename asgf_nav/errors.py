"""The one base class of errors a user can fix, kept free of heavy imports so scripts can catch it cheaply."""

from __future__ import annotations


class UserInputError(Exception):
    """Bad input the user can fix: a config value, an unknown or unbaked scene, a malformed data, episode or
    checkpoint file, a stale baked store, a full disk. Scripts end on one with a single ``error:`` line and exit
    status 2 (``asgf_nav.cli.run_script``) instead of a traceback; each subclass also keeps its builtin base
    (``ValueError``, ``OSError``, ...) for callers that catch that."""
