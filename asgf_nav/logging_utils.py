"""Logging set-up shared by every entry point: plain lines on the console that do not break tqdm bars, and the
command lines that messages tell the user to run."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so log lines appear above active progress bars instead of tearing them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:  # the line and its newline in one write: stderr writes through, and bake workers share it
            tqdm.write(self.format(record) + "\n", file=sys.stderr, end="")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def shell_command(*words: object) -> str:
    """A command line to print in a message, runnable when pasted into a shell: a word with a space, a quote
    or a ``$`` (a data root such as ``~/My Data``) is quoted, where pasted bare it would run another command
    or bake somewhere else. Placeholders in capitals (``CONFIG``) stay as they are."""
    return shlex.join(str(word) for word in words)


def resume_option() -> str:
    """How to pass ``--resume`` where the user typed the command: under ``make`` (which sets MAKELEVEL for its
    recipes) the flag goes through ARGS, and ``make train --resume`` would hand it to make."""
    return "make train ARGS=--resume" if os.environ.get("MAKELEVEL") else "--resume"


def bar_disabled(show: bool) -> bool | None:
    """tqdm's ``disable`` for a bar shown only when ``show``. When shown, None rather than False: an explicit
    False would override tqdm's own switches, drawing the bar into a log file (a background bake's, which
    sets ``TQDM_DISABLE``) where it buries the log lines under redraws; None draws it on a terminal only."""
    return None if show else True


def decade_count(count: int) -> bool:
    """Whether the ``count``-th of a repeated event gets a line of its own: the 1st, 10th, 100th, ...; a log
    then grows with the logarithm of the repetitions, and still says how many there were."""
    return count > 0 and str(count).rstrip("0") == "1"


FILE_BAR_SECONDS = 60.0  # how often a progress bar drawn into a file (not a terminal) is redrawn


def live_console() -> bool:
    """Whether standard error is watched as it is drawn: a terminal, or a notebook's output cell (which redraws a
    bar in place, though its stream is no terminal); not a file or a pipe (Slurm, nohup, ``> log``)."""
    try:
        on_terminal = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        on_terminal = False
    return on_terminal or "ipykernel" in sys.modules


class BarLines:
    """Standard error for a bar drawn into a file or a pipe: each redraw a line of its own. tqdm draws in place with
    carriage returns, so in a file a bar and the log line written after it (by a bake's worker, which does not know
    the bar) shared one line, and grep or an editor showed every redraw run together."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()  # tqdm's clearing writes (spaces between returns) draw nothing
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding and the like: tqdm picks unicode or ASCII blocks by them
        if name == "stream":  # not set yet (a copy being made): no endless lookup
            raise AttributeError(name)
        return getattr(self.stream, name)


def bar_pacing(mininterval: float = 0.1) -> dict[str, Any]:
    """tqdm's redraw intervals and stream for a bar on standard error: ``mininterval`` on a live console; where
    standard error is a file or a pipe, in which every redraw stays, once a minute (ten a second over an
    hours-long bake grow the log by megabytes) and each on a line of its own (``BarLines``)."""
    if live_console():
        return {"mininterval": mininterval}
    pace = max(mininterval, FILE_BAR_SECONDS)
    return {"mininterval": pace, "maxinterval": pace, "file": BarLines(sys.stderr)}


def record_in_log_files(message: str, exc_info: BaseException | None = None, level: int = logging.ERROR) -> None:
    """A line (ERROR, with the traceback of ``exc_info``) written to the log files alone (a run's ``train.log``): a
    run that ends in an error says so where its lines are kept, while the console gets the error once, from the
    script's own report. A stop the user or a scheduler asked for is a WARNING: how the run ended, not a fault."""
    root = logging.getLogger()
    info = (type(exc_info), exc_info, exc_info.__traceback__) if exc_info is not None else None
    record = root.makeRecord(root.name, level, __file__, 0, message, None, info)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


NOISY_LOGGERS = ("matplotlib", "PIL", "trimesh", "numba")  # quieted to WARNING: their INFO lines bury a run's


def setup_logging(level: str | int = "INFO", log_file: str | Path | None = None) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = TqdmHandler()
    console.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # a path undecodable under the file system's encoding reaches a message as surrogates: written escaped,
        # where strict UTF-8 dropped every line that named it
        file_handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(file_handler)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def logging_scope() -> Iterator[None]:
    """Undo, as the block ends, what :func:`setup_logging` did inside it: the root logger's handlers and
    level from before are back, so are the levels of the libraries it quieted, and the block's own handlers
    (a run's ``train.log``) are closed. A run called from a notebook must not send the notebook's later
    lines to its log file."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy_levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    try:
        yield
    finally:
        for name, noisy_level in noisy_levels.items():
            logging.getLogger(name).setLevel(noisy_level)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
