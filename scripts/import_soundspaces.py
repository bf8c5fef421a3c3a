"""Import SoundSpaces 1.0 scenes (Replica / Matterport3D) into the scene store and check their files.

Graphs and rendered views are converted into {data_root}/scenes/soundspaces_{dataset}/{scene}; binaural
RIRs stay where they are and are read on demand during training. Only downloaded scenes are imported.

Example: python scripts/import_soundspaces.py --root data/soundspaces --dataset replica --check-rirs 200
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, non_negative_int, run_script, user_path  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.scene import Scene  # noqa: E402
from asgf_nav.scenes.soundspaces import (  # noqa: E402
    DATASETS,
    SoundSpacesDataError,
    SoundSpacesPaths,
    SoundSpacesRirs,
)
from asgf_nav.scenes.soundspaces_import import import_dataset  # noqa: E402

logger = logging.getLogger("import_soundspaces")
NAMED_BAD_FILES = 5  # per scene; a badly damaged download is counted, not listed file by file


def check_rirs(paths: SoundSpacesPaths, scene: Scene, samples: int, seed: int = 0) -> tuple[int, list[str]]:
    """Read ``samples`` distinct random (receiver, source, azimuth) RIRs of a scene (every one when it has no
    more); return how many were read and the errors found, one per bad file."""
    node_ids = np.array(scene.store.array("soundspaces_node_ids"))
    sources = np.array(scene.store.array("source_nodes"))
    rirs = SoundSpacesRirs(paths, scene.name, node_ids, sources, cache_bytes=0)
    total = len(node_ids) * len(sources) * 4
    picks = np.random.default_rng(seed).choice(total, size=min(samples, total), replace=False)
    errors = []
    for pick in picks:
        receiver, rest = divmod(int(pick), len(sources) * 4)
        source, yaw = divmod(rest, 4)
        try:
            rirs.rir(receiver, int(sources[source]), yaw)
        except SoundSpacesDataError as exc:
            errors.append(str(exc))
    return len(picks), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=user_path, required=True, help="SoundSpaces data root (holds metadata/, binaural_rirs/, ...)"
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument(
        "--data-root", type=user_path, default="data", help="project data root; the store goes to its scenes/"
    )
    parser.add_argument("--scenes", nargs="+", help="scene names (default: every downloaded scene)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-import even when up to date, and over a scene a later release of asgf-nav stored in its format "
        "(refused without --force)",
    )
    parser.add_argument(
        "--check-rirs",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="read N random RIR files per scene and report missing or broken ones",
    )
    args = parser.parse_args(argv)
    # checked, not made: the folders a file's check creates are removed again, so a refused import leaves none
    check_output(parser, "--data-root", Path(args.data_root) / "scenes" / "import")
    setup_logging("INFO")

    paths = SoundSpacesPaths(Path(args.root), args.dataset)
    directories = import_dataset(paths, args.data_root, args.scenes, force=args.force)  # bad data: one error line
    failed = 0
    print(f"{'scene':<24} {'nodes':>6} {'sources':>7} {'views':>12} {'RIR check':>12}")
    for directory in directories:
        scene = Scene(directory)
        views = f"{scene.image_size}px" if scene.has_vision else "none"
        check = "-"
        if args.check_rirs:
            checked, errors = check_rirs(paths, scene, args.check_rirs)
            check = f"{checked - len(errors)}/{checked} ok"
            for message in errors[:NAMED_BAD_FILES]:
                logger.error("%s", message)
            if len(errors) > NAMED_BAD_FILES:
                logger.error("%s: %d more bad RIR files, not named", scene.name, len(errors) - NAMED_BAD_FILES)
            failed += bool(errors)
        sources = len(scene.store.array("source_nodes"))
        print(f"{scene.name:<24} {scene.num_nodes:>6} {sources:>7} {views:>12} {check:>12}")
    if failed:
        logger.error("%d scene(s) have missing or unreadable RIR files (see above)", failed)
        return 1
    return 0


if __name__ == "__main__":
    run_script(main)
