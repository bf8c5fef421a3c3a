"""Draw a baked scene's acoustics: received energy per node for one source, and binaural RIR pairs.

Usage: python scripts/show_acoustics.py --dataset replica --scene apartment_0 \
           --out docs/images/acoustics_replica_apartment_0.png [--data-root data] [--source-slot 0]
Builds the scene's layout and acoustics stages first when they are missing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from asgf_nav.acoustics.bake import bake_acoustics
from asgf_nav.acoustics.rir import SceneRirs
from asgf_nav.cli import run_script
from asgf_nav.config import load_config
from asgf_nav.io import atomic_savefig
from asgf_nav.scenes.floorplan import FloorPlan
from asgf_nav.scenes.store import SceneStore, scene_dir, stage_complete
from asgf_nav.viz.acoustic_plot import acoustics_figure, pick_probe_nodes

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="replica")
    parser.add_argument("--scene", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-root", default=None, help="default: the config's scenes.data_root")
    parser.add_argument("--config", default=None)
    parser.add_argument("--source-slot", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    directory = scene_dir(args.data_root or cfg.scenes.data_root, args.dataset, args.scene)
    if not stage_complete(directory, "layout"):
        from asgf_nav.scenes.build import bake_layout

        bake_layout(directory, cfg)
    if not stage_complete(directory, "acoustics"):
        bake_acoustics(directory, cfg)
    store = SceneStore(directory)
    rirs = SceneRirs(store)
    positions = np.asarray(store.array("positions"), dtype=float)
    plan = FloorPlan.load(directory / "floorplan.json")
    source = int(rirs.source_nodes[args.source_slot])
    fig = acoustics_figure(plan, positions, rirs, source, pick_probe_nodes(positions, source))
    atomic_savefig(fig, args.out, dpi=110)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    run_script(main)
