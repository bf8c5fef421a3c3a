"""Resumable evaluation: finished episodes are appended to a progress file as they end.

A long evaluation (a thousand Replica episodes on a CPU takes hours) that is killed keeps every episode
it finished in ``{out_dir}/episodes.partial.jsonl``; the same command later runs only the rest and then
writes the usual outputs and removes the file (``--sound-split both``: once both splits are written, so
that a stop during the second leaves the first one's episodes to its rerun). A last line cut short by the kill
(or a full disk) is dropped on resume, its episode run again; a whole last record whose newline was not written
is kept, and its line ended before the next record is appended.

The file's first line records what is being evaluated (agent, checkpoint, split, seed, task limits, data
root, the episode list's fingerprint, the random agent's number of episodes stepped together, for embedded
scenes the acoustics and render versions their responses were made with ...), and a resume with anything
different is refused with the differing keys named, so two evaluations never mix; a record that lacks a key
was written by an earlier release, and is refused saying so, but for the keys of ``KEYS_EARLIER_RELEASES_LACK``
(SoundSpaces' ``rir_on_missing``), whose value it did not record but did not change either. Every
split of a run opens its file before any episode runs. While it runs an evaluation holds a lock on its
directory (:func:`evaluation_lock`, on a hidden file beside it), so a second process evaluating into the
same directory is refused at once instead of appending the same episodes to the same file.

A seeded policy draws each episode's actions from a stream of its own (``evaluator.episode_stream``), so
a resumed evaluation replays the episodes an uninterrupted one would have run; the random baseline draws
from one stream per run, so its resumed episodes are other draws (reproducible, as valid, not identical), and
another --num-envs draws otherwise again: it is recorded for that agent, and a finished result is not
replaced by another draw.

On SoundSpaces data with ``scenes.rir_on_missing=silence``, the RIR files heard as silence so far are saved
with the episodes: a record's line names, under ``rirs_replaced_by_silence`` (``{dataset/scene: [file, ...]}``,
stripped before the record is read), the files not saved before that the split's world read by the time its
episode ended, so that a resumed evaluation's summary counts those of the killed process too, and a record
cut short by the kill takes its files with it. The header's identity holds ``records_rirs_replaced_by_silence``:
an earlier release, which knows no such key, refuses the file up front naming it, rather than meeting the
extra key in a record. A progress file of an earlier release saved none: its identity lacks the key, which is
resumed all the same, and the count of its resume is then a lower bound
(:attr:`EvaluationProgress.silence_unrecorded`), which the summary says.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asgf_nav.errors import UserInputError
from asgf_nav.eval.evaluator import EpisodeRecord, record_problem
from asgf_nav.eval.report import ACOUSTICS_META_KEYS, PROGRESS_FILE, SUMMARY_FILE, lock_path
from asgf_nav.io import atomic_write_text, exclusive_lock
from asgf_nav.tasks.episodes import Episode

logger = logging.getLogger(__name__)

SILENCED_KEY = "rirs_replaced_by_silence"  # in a record's line: the RIR files heard as silence it adds
# in the header's identity: this file saves them (earlier releases did not, and refuse a file whose identity has it)
SILENCE_MARK = "records_rirs_replaced_by_silence"
# identity keys an earlier release's progress file or summary may lack and still be resumed or run again:
# their value is then unknown, not another one (a file that records another value is refused as usual)
KEYS_EARLIER_RELEASES_LACK = frozenset({"rir_on_missing"})


class EvaluationProgressError(UserInputError, ValueError):
    """A progress file that belongs to another evaluation, or cannot be read."""


def episode_key(episode: Any) -> tuple[str, str]:
    """(scene, episode id), unique within a split, of a stored Episode, a resolved one or an EpisodeRecord."""
    scene = episode.scene_name if isinstance(episode, Episode) else episode.scene
    return str(scene), str(episode.episode_id)


MODEL_FILE_KEYS = ("doa_head", "audio_model")  # identity keys holding io.file_identity records


def _same(key: str, stored: Any, now: Any, unread_task_keys: frozenset[str] = frozenset()) -> bool:
    """Whether identity ``key``'s ``stored`` value is this evaluation's ``now``. A checkpoint path is compared
    resolved, as evaluate.py records it now, so that one recorded as typed through a symlink still matches its
    file; one recorded relative (by an earlier release) was relative to a directory not known here, so it is not
    compared: the checkpoint is then told by its update and weights' digest, the identity's
    ``checkpoint_update`` and ``checkpoint_weights``, compared besides. The ``task`` settings are compared but for
    ``unread_task_keys``, those that change none of the agent's episodes. A model file (the DoA head, a baseline's
    audio model) is told by its digest alone: the packaged ones lie wherever the package is installed, and a new
    clone or environment must resume the evaluation of the same weights."""
    if key == "checkpoint" and isinstance(stored, str) and isinstance(now, str):
        return not Path(stored).is_absolute() or Path(stored).resolve() == Path(now).resolve()
    if key in MODEL_FILE_KEYS and isinstance(stored, dict) and isinstance(now, dict):
        return stored.get("sha256") == now.get("sha256")
    if key == "task" and isinstance(stored, dict) and isinstance(now, dict):  # the agent's unread keys aside
        return {k: v for k, v in stored.items() if k not in unread_task_keys} == {
            k: v for k, v in now.items() if k not in unread_task_keys
        }
    return stored == now


def _check_not_a_file(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationProgressError(f"{out_dir} is a file, where this evaluation writes its directory")


@contextmanager
def evaluation_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock (:func:`lock_path`) for the block; another process holding it is refused at
    once. The OS drops the lock of a killed process."""
    out_dir = Path(out_dir)
    _check_not_a_file(out_dir)
    lock = lock_path(out_dir)

    def busy() -> EvaluationProgressError:
        return EvaluationProgressError(
            f"another process is evaluating into {out_dir} (it holds {lock}); wait for it to finish, "
            "or pass another --out / --name"
        )

    with exclusive_lock(lock, f"evaluation {out_dir}", busy=busy):
        yield


class EvaluationProgress:
    """The finished episodes of one evaluation, read back on start and appended to as episodes end.

    Its writer holds :func:`evaluation_lock` on the directory throughout."""

    def __init__(self, out_dir: str | Path, identity: dict[str, Any], unread_task_keys: Sequence[str] = ()) -> None:
        """``unread_task_keys``: keys of the identity's ``task`` that change none of this agent's episodes
        (``evaluation.unread_task_keys``), recorded but not compared."""
        _check_not_a_file(Path(out_dir))
        self.unread_task_keys = frozenset(unread_task_keys)
        self.path = Path(out_dir) / PROGRESS_FILE
        self.identity = json.loads(json.dumps(identity))  # as it reads back from the file
        self.done: dict[tuple[str, str], EpisodeRecord] = {}
        self.silenced: dict[str, set[str]] = {}  # dataset/scene -> RIR files heard as silence, saved in the file
        self.silence_unrecorded = False  # episodes of an earlier release's file may have heard more as silence
        self._check_finished(Path(out_dir) / SUMMARY_FILE)
        self._made: tuple[Path, Path | None] | None = None  # the file and new directory it wrote (discard)
        if self.path.exists():
            self._read()
        else:
            new_dir = not Path(out_dir).exists()
            atomic_write_text(self.path, self._header())
            self._made = (self.path, Path(out_dir) if new_dir else None)

    def _difference(self, stored: dict[str, Any], keys: Iterable[str]) -> tuple[str | None, list[str]]:
        """How ``stored`` differs from this evaluation on ``keys``: the keys whose stored value differs, worded
        (None if none), and those it does not record (an earlier release wrote it: :meth:`_earlier_release`)."""
        differences, unrecorded, versions = [], [], False
        other_source = "scene_source" in stored and stored["scene_source"] != self.identity.get("scene_source")
        for key in sorted(keys):
            if key in ACOUSTICS_META_KEYS and (other_source or self.identity.get(key) is None):
                continue  # recorded for embedded scenes only (scene_source says it), None for an agent hearing nothing
            if key not in stored and key in self.identity:
                if key not in KEYS_EARLIER_RELEASES_LACK:
                    unrecorded.append(key)
            elif not _same(key, stored.get(key), self.identity.get(key), self.unread_task_keys):
                differences.append(f"{key} was {stored.get(key)!r}, now {self.identity.get(key)!r}")
                versions = versions or key in ACOUSTICS_META_KEYS
        if versions:
            differences.append(
                "the embedded scenes' responses were baked or rendered again since, so its episodes heard other "
                "responses than this evaluation would"
            )
        return "; ".join(differences) or None, unrecorded

    def _earlier_release(self, unrecorded: Sequence[str]) -> str:
        """Why a record lacking ``unrecorded`` (keys this evaluation records) is refused: an earlier release wrote
        it, without them."""
        listed = ", ".join(f"{key} (now {self.identity[key]!r})" for key in unrecorded)
        text = f"written by an earlier release that did not record {listed}"
        if set(unrecorded) & set(ACOUSTICS_META_KEYS):
            text += "; its responses are not the ones baked and rendered now"
        else:
            text += ", so it cannot be told to be this evaluation"
        return text

    def _check_finished(self, summary: Path) -> None:
        """A finished evaluation of something else (another checkpoint, seed, episode list), or one an earlier
        release wrote without a key this one records, is never overwritten; the same evaluation again is run
        again."""
        if not summary.exists():
            return
        try:
            stored = json.loads(summary.read_text(encoding="utf-8"))["meta"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise EvaluationProgressError(f"{summary} is not an evaluation summary ({exc}); delete it") from exc
        # the summary's meta holds more than the identity
        difference, unrecorded = self._difference(stored, self.identity)
        if unrecorded:
            other = f" of something else ({difference})," if difference else ""
            raise EvaluationProgressError(
                f"{summary.parent} holds a finished evaluation{other} {self._earlier_release(unrecorded)}: move it "
                "aside, or choose another --out (or --name) to keep both"
            )
        if difference:
            raise EvaluationProgressError(
                f"{summary.parent} holds a finished evaluation of something else: {difference}; "
                "pass another --name (or --out) to keep both, or delete the directory"
            )

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        try:
            header = json.loads(lines[0])
            stored = dict(header["evaluation"])
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise EvaluationProgressError(
                f"{self.path} is not an evaluation progress file ({exc}); delete it to start over"
            ) from exc
        saves_silenced = bool(stored.pop(SILENCE_MARK, False))  # the file's format, not what is evaluated
        difference, unrecorded = self._difference(stored, set(stored) | set(self.identity))
        if (difference or unrecorded) and not any(line.strip() for line in lines[1:]):
            # no episode was saved under the other settings (stopped at its first: a missing RIR file, whose
            # error names scenes.rir_on_missing=silence): nothing to keep, so the hinted command runs
            logger.info("%s holds no episode of its evaluation (%s): starting it over", self.path, difference)
            atomic_write_text(self.path, self._header())
            return
        if unrecorded:
            other = f" belongs to another evaluation ({difference}) and was" if difference else " was"
            raise EvaluationProgressError(
                f"{self.path}{other} {self._earlier_release(unrecorded)}: its episodes cannot be resumed by this "
                "evaluation; delete it (or move it aside) to start over, or pass another --out / --name"
            )
        if difference:
            raise EvaluationProgressError(
                f"{self.path} belongs to another evaluation: {difference}; delete the file, or pass another "
                "--out / --name"
            )
        unterminated = bool(text) and not text.endswith("\n")
        for number, line in enumerate(lines[1:], start=2):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):  # the run was killed while writing its last line: drop it
                    logger.warning("%s: dropping its unfinished last line", self.path)
                    # unmarked if it was: an earlier release's file must not look as if it saved silenced files
                    lines_kept = "".join(l + "\n" for l in lines[1:-1])
                    atomic_write_text(self.path, self._header(saves_silenced) + lines_kept)
                    unterminated = False
                    break
                raise EvaluationProgressError(f"{self.path} line {number} is not an episode record: {exc}") from exc
            silenced: dict[str, list[str]] = {}
            if isinstance(data, dict) and SILENCED_KEY in data:  # not a field of the record: the files it adds
                data = dict(data)
                silenced = self._silenced_in_line(data.pop(SILENCED_KEY), number)
            # checked before any episode runs: a damaged record would otherwise end the resumed run, after
            # the rest of the episodes, without a summary (or pass its wrong values into episodes.jsonl)
            problem = record_problem(data)
            if problem:
                raise EvaluationProgressError(
                    f"{self.path} line {number} is not an episode record: {problem}; delete that line to run "
                    "its episode again, or the file to start over"
                )
            record = EpisodeRecord.from_json(data)
            self.done[episode_key(record)] = record
            for label, paths in silenced.items():
                self.silenced.setdefault(label, set()).update(paths)
        if unterminated:  # a whole record whose newline was not written (killed, or the disk full, right there):
            try:  # ended before the next record is appended, which would join its line
                self._append("\n", durable=True)
            except OSError as exc:
                raise EvaluationProgressError(
                    f"cannot end the last line of {self.path} ({exc}); free space on its disk (or make it writable) "
                    "and run the evaluation again to resume it"
                ) from exc
        self.silence_unrecorded = bool(self.done) and not saves_silenced
        logger.info("resuming the evaluation: %d episodes already done in %s", len(self.done), self.path)

    def _silenced_in_line(self, files: Any, number: int) -> dict[str, list[str]]:
        """The RIR files ``files`` (``{dataset/scene: [file, ...]}``) of line ``number``, checked."""
        if not isinstance(files, dict) or not all(
            isinstance(label, str) and isinstance(paths, list) and all(isinstance(p, str) for p in paths)
            for label, paths in files.items()
        ):
            raise EvaluationProgressError(
                f"{self.path} line {number} has no list of RIR files heard as silence per dataset/scene under "
                f"{SILENCED_KEY!r}; delete that line to run its episode again, or the file to start over"
            )
        return files

    def _header(self, saves_silenced: bool = True) -> str:
        identity = {**self.identity, SILENCE_MARK: True} if saves_silenced else self.identity
        return json.dumps({"evaluation": identity}) + "\n"

    def remaining(self, episodes: Sequence[Any]) -> list[Any]:
        return [ep for ep in episodes if episode_key(ep) not in self.done]

    def add(self, record: EpisodeRecord, silenced: Mapping[str, Collection[str]] | None = None) -> None:
        """Keep ``record`` and append it to the file at once (one whole line per episode), naming in that line
        the RIR files heard as silence (``silenced``: per dataset/scene, this process's so far) not saved before:
        in one line, a record cut short by a kill takes them with it."""
        self.done[episode_key(record)] = record
        new = {label: sorted(set(paths) - self.silenced.get(label, set())) for label, paths in (silenced or {}).items()}
        new = {label: paths for label, paths in new.items() if paths}
        for label, paths in new.items():
            self.silenced.setdefault(label, set()).update(paths)
        line = {**record.to_json(), **({SILENCED_KEY: new} if new else {})}
        self._append(json.dumps(line) + "\n")

    def _append(self, text: str, durable: bool = False) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    def silenced_files(self, current: Mapping[str, Collection[str]] | None = None) -> dict[str, set[str]]:
        """The RIR files heard as silence while this evaluation's episodes ran, per dataset/scene: those saved in
        the file (by earlier processes too) and ``current`` (this process's, saved or not)."""
        files = {label: set(paths) for label, paths in self.silenced.items()}
        for label, paths in (current or {}).items():
            files.setdefault(label, set()).update(paths)
        return {label: paths for label, paths in files.items() if paths}

    def records(self, episodes: Sequence[Any]) -> list[EpisodeRecord]:
        """The records of ``episodes``, in their order; every one must be done."""
        return [self.done[episode_key(ep)] for ep in episodes]

    def finish(self) -> None:
        """Remove the progress file once the final outputs are written."""
        self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove what this object created, while no episode was added to it: an evaluation refused before any
        episode ran (another split's directory holds something else) leaves no unfinished evaluation behind."""
        if self._made is None or self.done:
            return
        path, new_dir = self._made
        path.unlink(missing_ok=True)
        if new_dir is not None and new_dir.is_dir() and not any(new_dir.iterdir()):
            new_dir.rmdir()
        self._made = None
