"""Draw a baked scene's acoustics: received energy per node for one source, and binaural RIR pairs.

Usage: python scripts/show_acoustics.py --dataset replica --scene apartment_0 \\
           --out docs/images/acoustics_replica_apartment_0.png [--data-root data] [--source-slot 0]
Builds the scene's layout and acoustics stages first when they are missing. A scene already baked is drawn as
it is; where --config or overrides other than scenes.data_root / scenes.dataset ask for other settings than
it was baked with, the run stops, unless --rebake allows baking those stages again (which replaces what runs
trained on the scene hear).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, non_negative_int, refuse_stale_stages, run_script, scene_options, user_path  # noqa: E402
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.io import atomic_savefig  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.build import ensure_scenes, missing_stages  # noqa: E402
from asgf_nav.scenes.floorplan import FloorPlan  # noqa: E402
from asgf_nav.scenes.presets import PRESETS  # noqa: E402
from asgf_nav.scenes.store import SceneStore, scene_dir  # noqa: E402
from asgf_nav.viz.acoustic_plot import acoustics_figure, pick_probe_nodes  # noqa: E402

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=sorted(PRESETS),
        help="scene preset (default: the config's scenes.dataset, replica without --config)",
    )
    parser.add_argument("--scene", required=True, help="scene name, e.g. apartment_0")
    parser.add_argument("--out", type=user_path, required=True, help="image file to write (PNG, PDF, SVG)")
    parser.add_argument("--data-root", type=user_path, default=None, help="default: the config's scenes.data_root")
    parser.add_argument(
        "--rebake", action="store_true", help="bake again the stages baked with other settings than the ones asked for"
    )
    parser.add_argument(
        "--config", type=user_path, default=None, help="experiment config (YAML file or name in asgf_nav/configs/)"
    )
    parser.add_argument("--source-slot", type=non_negative_int, default=0, help="which of the scene's sources")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on both sides of an option
    check_output(parser, "--out", args.out, figure=True)
    setup_logging("INFO")
    cfg = load_config(args.config, args.overrides, scene_options(args))
    dataset = cfg.scenes.dataset
    directory = scene_dir(cfg.scenes.data_root, dataset, args.scene)
    # settings asked for, or stages missing: bake (a training run's store is not re-baked by just looking at it)
    where = ("scenes.data_root=", "scenes.dataset=")  # overrides that only say where the scene is
    asked = args.config or any(not item.startswith(where) for item in args.overrides)
    if asked or missing_stages(directory, ("layout", "acoustics")):
        refuse_stale_stages(parser, directory, ("layout", "acoustics"), cfg, args.rebake)
        ensure_scenes(cfg, dataset, [args.scene], ("layout", "acoustics"), workers=1)
    store = SceneStore(directory)
    from asgf_nav.acoustics.rir import SceneRirs  # below asgf_nav.cli, whose Ctrl-C hook comes first

    rirs = SceneRirs(store)
    sources = len(rirs.source_nodes)
    if args.source_slot >= sources:
        parser.error(f"--source-slot: {args.scene} has {sources} sources (slots 0-{sources - 1})")
    positions = np.asarray(store.array("positions"), dtype=float)
    plan = FloorPlan.load(directory / "floorplan.json")
    source = int(rirs.source_nodes[args.source_slot])
    fig = acoustics_figure(plan, positions, rirs, source, pick_probe_nodes(positions, source))
    atomic_savefig(fig, args.out, dpi=110)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    run_script(main)
