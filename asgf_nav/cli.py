"""Argument parsing pieces shared by the thin scripts in scripts/."""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn


def _report_interrupt(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
    """A Ctrl-C is the user's choice, not a crash: one line instead of a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted (Ctrl-C)", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


# Installed on import, before the heavy imports below and in the scripts (torch takes seconds), so a Ctrl-C
# at start-up also ends in one line. Python still exits as killed by SIGINT, after its clean-up.
sys.excepthook = _report_interrupt

from asgf_nav.config import ConfigError, ExperimentConfig, load_config  # noqa: E402
from asgf_nav.errors import UserInputError  # noqa: E402
from asgf_nav.logging_utils import shell_command  # noqa: E402


class ConsoleStream:
    """Standard output or error that outlives its reader: once the pipe it writes into is gone (``| head`` that
    has read enough, a killed ``| tee``), the descriptor is pointed at /dev/null instead of every later write raising
    BrokenPipeError, so a run nobody watches any more goes on writing its log file and checkpoints."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor (a test's capture) stays
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        with contextlib.suppress(OSError, ValueError):  # what the failed write left buffered goes there too
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... are the stream's
        return getattr(self.stream, name)


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Entry point of a script: bad input the user can fix (a config value, an unknown or unbaked scene, missing
    or malformed SoundSpaces data or episode files, an export that cannot be written, an unreadable or stale
    baked spectrogram store, another evaluation's progress file, files that are not an evaluation's, an
    unreadable or mismatched checkpoint, a missing or corrupt sound-bank file, a bake worker that died, a file that
    cannot be written: a full disk, a read-only directory; a file the user may not read) ends with one ``error:``
    line and exit status 2 instead of a traceback.

    SIGTERM raises ``SystemExit`` (``asgf_nav.termination``) instead of killing the process outright, so
    ``finally`` blocks run: a bake's process pool terminates its workers rather than leaving them running.
    """
    from asgf_nav.io import raise_open_file_limit
    from asgf_nav.termination import install_stop_handlers

    install_stop_handlers()
    raise_open_file_limit()  # one open file per memory-mapped scene array
    consoles = sys.stdout, sys.stderr
    for console in consoles:  # an ASCII console (a C locale without UTF-8 mode) gets \xb1 for a '±', not a traceback
        with contextlib.suppress(AttributeError, ValueError):  # a test's capture, or a closed stream
            console.reconfigure(errors="backslashreplace")
    sys.stdout, sys.stderr = (None if s is None else ConsoleStream(s) for s in consoles)  # None: closed (>&-)
    try:
        code = main()
    except UserInputError as exc:  # each module's own error class derives from it
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except PermissionError as exc:  # another user's files (a shared data root), where no check named them first
        paths = " and ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        what = f"{exc.strerror}: {paths}" if exc.strerror and paths else str(exc) or "permission denied"
        if exc.errno == errno.EACCES:  # EPERM: an immutable file, an operation refused to any user
            what += (
                ": it belongs to another user or lies where you may not read or write; ask its owner for access "
                "(chmod -R a+rX lets others read) or use a path of your own"
            )
        print(f"error: {what}", file=sys.stderr)
        raise SystemExit(2) from None
    except SystemExit as exc:  # a SIGTERM (asgf_nav.termination) ends in one line too, as a Ctrl-C does
        if exc.code == 128 + signal.SIGTERM:
            print("terminated (SIGTERM)", file=sys.stderr)
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = consoles
    raise SystemExit(code or 0)


def _bounded(kind: type, accept: Callable[[Any], bool], wording: str, name: str) -> Callable[[str], Any]:
    """argparse type: ``kind`` within a bound; a value outside it reads
    ``argument --episodes: must be positive, got -3``."""

    def parse(text: str) -> Any:
        value = kind(text)
        if kind is float and not math.isfinite(value):  # NaN would pass any bound; inf is no setting either
            raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    parse.__name__ = name  # argparse shows it for text that is no number: "invalid positive_int value: 'x'"
    return parse


def int_at_least(minimum: int, why: str) -> Callable[[str], int]:
    """argparse type: an int of at least ``minimum``; ``why`` explains the bound in the message."""
    return _bounded(int, lambda v: v >= minimum, f">= {minimum} ({why})", f"int_at_least_{minimum}")


positive_int = _bounded(int, lambda v: v > 0, "positive", "positive_int")
positive_float = _bounded(float, lambda v: v > 0, "positive", "positive_float")
non_negative_int = _bounded(int, lambda v: v >= 0, ">= 0", "non_negative_int")
non_negative_float = _bounded(float, lambda v: v >= 0, ">= 0", "non_negative_float")
finite_float = _bounded(float, lambda v: True, "unbounded", "finite_float")  # _bounded refuses NaN and inf


def user_path(value: str) -> str:
    """argparse type of an option or positional naming a file or directory: a leading ``~`` (which the shell
    leaves in ``--out=~/x``) is the home directory, as in the config's path keys (``config.PATH_KEYS``). Other
    values (a packaged config's name, ``none``, ``auto``) pass unchanged."""
    return os.path.expanduser(value) if value.startswith("~") else value


def number_type(
    kind: type, name: str, positive: tuple[str, ...], non_negative: tuple[str, ...], paths: tuple[str, ...] = ()
) -> Callable:
    """argparse type of the field ``name`` of a dataclass of script arguments, bounded when it is listed; a
    field listed in ``paths`` names a file or directory (:func:`user_path`)."""
    if name in paths:
        return user_path
    if name in positive:
        return positive_int if kind is int else positive_float
    if name in non_negative:
        return non_negative_int if kind is int else non_negative_float
    return finite_float if kind is float else kind


def field_help(cls: type) -> dict[str, str]:
    """``--help`` text for each field of dataclass ``cls``: its comment in the class source
    (:func:`config.field_comments`) and its default."""
    import dataclasses

    from asgf_nav.config import field_comments

    comments = field_comments(cls)
    return {
        f.name: f"{comments[f.name]} (default: %(default)r)" if f.name in comments else "default: %(default)r"
        for f in dataclasses.fields(cls)
    }


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config`` and the ``KEY=VALUE`` overrides, which may stand on both sides of the script's options
    (``a=1 --resume b=2``): the parser's ``parse_args`` becomes ``parse_intermixed_args``, since plain argparse
    fills a positional list from one run of arguments only and calls the rest unrecognized."""
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]
    parser.add_argument(
        "--config",
        type=user_path,
        default=default,
        help="config name in asgf_nav/configs/ (e.g. replica_unheard.yaml) or a path to a YAML file"
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides such as ppo.lr=1e-4 train.run_dir=runs/exp1 (every key, what it sets and its "
        "value: scripts/train_ppo.py --print-config)",
    )


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset / --data-root shortcuts for scenes.dataset / scenes.data_root (applied by config_from_args)."""
    from asgf_nav.scenes.presets import PRESETS

    parser.add_argument("--dataset", choices=sorted(PRESETS), help="scene preset (overrides scenes.dataset)")
    parser.add_argument("--data-root", type=user_path, help="data root (overrides scenes.data_root)")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Load the config with the script's scene options (:func:`scene_options`), or exit with status 2 naming the
    bad key."""
    try:
        return load_config(args.config, args.overrides, scene_options(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_config_beside_its_run(args: argparse.Namespace, cfg: ExperimentConfig) -> None:
    """A run's own config.yaml (``--config RUN/config.yaml``, as the resume hints advise) names the directory it
    was written in; in a run copied or moved since, it names the old one, where ``--resume`` would continue (and
    write to) another run, or start a new one. Exits with status 2 unless ``train.run_dir`` is given."""
    from asgf_nav.config import resolve_config_path
    from asgf_nav.rl.checkpoint import BEST_CHECKPOINT, checkpoint_dir, list_checkpoints

    if args.config is None or any(o.partition("=")[0].strip() == "train.run_dir" for o in args.overrides):
        return
    path = resolve_config_path(args.config)
    run_dir = path.parent
    if path.name != "config.yaml" or not (
        list_checkpoints(run_dir) or (checkpoint_dir(run_dir) / BEST_CHECKPOINT).exists()
    ):
        return
    named = Path(cfg.train.run_dir)
    if named.resolve() != run_dir.resolve():
        why = "the run was copied or moved" if named.is_absolute() else f"relative to this directory, {Path.cwd()}"
        here = f"./{run_dir}" if str(run_dir).startswith("~") else run_dir  # a folder named "~", not the home
        print(
            f"error: --config {path} belongs to the run in {run_dir}, but its train.run_dir is {named} ({why}); "
            f"add {shell_command(f'train.run_dir={here}')} to continue it there, or name another train.run_dir for a "
            "new run with its settings",
            file=sys.stderr,
        )
        raise SystemExit(2)


def scene_options(args: argparse.Namespace) -> dict[str, Any]:
    """The scene options a script was given (``--dataset``, ``--data-root``, ``--image-size``,
    ``--num-scenes``) by config key, for ``load_config`` to check with the rest of the config."""
    keys = {"dataset": "scenes.dataset", "data_root": "scenes.data_root"}
    keys |= {"image_size": "scenes.image_size", "num_scenes": "scenes.num_scenes"}
    return {key: getattr(args, name) for name, key in keys.items() if getattr(args, name, None) is not None}


def checkpoint_choices(directory: Path) -> str:
    """Which files to pass instead of a run (or checkpoints) directory: best.pt and the newest checkpoint."""
    from asgf_nav.rl.checkpoint import BEST_CHECKPOINT, checkpoint_dir, list_checkpoints

    run_dir = directory.parent if directory.name == "checkpoints" else directory
    best = checkpoint_dir(run_dir) / BEST_CHECKPOINT
    found = ([best] if best.is_file() else []) + list_checkpoints(run_dir)[-1:]
    if not found:
        return "it holds no checkpoints/best.pt or checkpoints/ckpt_*.pt"
    return "pass one of its checkpoint files, e.g. " + " or ".join(str(p) for p in found)


def load_checkpoint_or_exit(checkpoint: str) -> dict[str, Any]:
    """``rl.checkpoint.load_checkpoint`` on the CPU, or exit with status 2 naming a missing file (or, for a
    directory, the checkpoint files in it); an unreadable one raises CheckpointError, which ``run_script``
    reports as one error line."""
    from asgf_nav.rl.checkpoint import load_checkpoint

    if Path(checkpoint).is_dir():
        print(f"error: checkpoint {checkpoint} is a directory; {checkpoint_choices(Path(checkpoint))}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_checkpoint(checkpoint)
    except FileNotFoundError:
        print(
            f"error: checkpoint {checkpoint} does not exist (training writes <train.run_dir>/checkpoints/"
            "ckpt_*.pt, and best.pt from the first validation on)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def check_output(
    parser: argparse.ArgumentParser, flag: str, path: str | Path | None, directory: bool = False, figure: bool = False
) -> None:
    """Before any work: the output ``path`` of ``flag`` (a file, or with ``directory`` a directory; with
    ``figure`` of a format matplotlib writes) can be written, so that a long run does not fail at its last write.
    The folders a file's check creates are removed again: a run refused later leaves nothing behind."""
    from asgf_nav.io import writable_dir_problem

    if path is None:
        return
    path = Path(path)
    if not directory and path.is_dir():
        parser.error(f"{flag}: {path} is a directory; give a file name")
    if figure:
        from matplotlib.figure import Figure

        formats = sorted(Figure().canvas.get_supported_filetypes())
        if path.suffix.lstrip(".").lower() not in formats:
            parser.error(f"{flag}: {path} is no figure format matplotlib writes; end it in one of {formats}")
    folder = path if directory else path.parent
    missing = [] if directory else [p for p in (folder, *folder.parents) if not p.exists()]
    problem = writable_dir_problem(folder)
    for created in missing:  # deepest first: a file's folders are made when it is written, by a run not refused
        with contextlib.suppress(OSError):
            created.rmdir()
    if problem:
        parser.error(f"{flag}: {problem}")


OVERRIDE_PATTERN = re.compile(r"^\w+(\.\w+)+=")  # ppo.lr=1e-4, scenes.image_size=64


def list_item(convert: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """argparse type for the items of a list option (``nargs="+"``), which would otherwise take in the config
    overrides after it: ``--splits train ppo.lr=1`` reads ``argument --splits: 'ppo.lr=1' looks like a config
    override; put overrides before the option``. Other text with ``=`` (a label such as ``"asgf seed=1"``) is
    left to ``convert``."""

    def parse(text: str) -> Any:
        if OVERRIDE_PATTERN.match(text):
            raise argparse.ArgumentTypeError(f"{text!r} looks like a config override; put overrides before the option")
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it for text ``convert`` refuses
    return parse


def refuse_stale_stages(
    parser: argparse.ArgumentParser, directory: Path, stages: Sequence[str], cfg: ExperimentConfig, rebake: bool
) -> list[str]:
    """A script that draws a scene bakes what is missing, but replaces a stage baked with other settings (the
    views a trained run reads) only when ``--rebake`` says so; returns the stages it will bake."""
    from asgf_nav.scenes.build import missing_stages, setting_changes, stages_to_build

    missing = missing_stages(directory, stages)
    todo = stages_to_build(directory, stages, cfg)  # the missing ones too, in build order
    stale = [stage for stage in todo if stage not in missing]
    if stale and not rebake:
        listed = []
        for stage in stale:
            changes = setting_changes(directory, stage, cfg)
            listed += [f"{stage}: {key} baked {old}, asked {new}" for key, (old, new) in changes.items()]
            if not changes:  # current itself, but baked from a layout that is baked again
                listed.append(f"{stage}: baked from the layout, which would be baked again")
        parser.error(
            f"{directory} is baked with other settings than these ({'; '.join(listed)}); drawing it with them "
            "would bake those stages again, replacing what runs trained on this scene read: give --rebake, "
            "another --data-root, or the settings it was baked with"
        )
    return todo


def check_clip_seconds(parser: argparse.ArgumentParser, seconds: float) -> None:
    """The DoA scripts' clip length: a few of the heads' frames at least, the bank's 1 s sounds at most."""
    from asgf_nav.models.doa.config import MIN_CLIP_SECONDS

    if not MIN_CLIP_SECONDS <= seconds <= 1.0:
        parser.error(
            f"--clip-seconds: {seconds} s is outside [{MIN_CLIP_SECONDS}, 1]: a few of the heads' frames at least, "
            "the bank's 1 s sounds at most"
        )


def check_doa_rooms(parser: argparse.ArgumentParser, args: dict[str, Any]) -> None:
    """The DoA scripts' rooms and pool directory, checked before any pool is drawn: baked scenes need their
    data root and a scene preset by that name."""
    from asgf_nav.scenes.presets import PRESETS

    if args["scenes_dataset"] not in PRESETS:
        parser.error(f"--scenes-dataset: no scene preset {args['scenes_dataset']!r}; the presets: {sorted(PRESETS)}")
    if args.get("pool_dir"):  # checked, not created: a refused run leaves nothing behind
        pools = Path(args["pool_dir"])
        existing = next(p for p in (pools, *pools.parents) if p.exists())
        if not existing.is_dir():
            parser.error(f"--pool-dir: {existing} is a file, where the RIR pools' directory {pools} would be")
    if args["rooms"] in ("scenes", "both") and not args["scenes_root"]:
        parser.error(
            f"--scenes-root: --rooms {args['rooms']} uses baked scenes; give their data root "
            f"(bake them with: python scripts/build_scenes.py --dataset {args['scenes_dataset']} --data-root DATA)"
        )
