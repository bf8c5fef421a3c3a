"""Draw one embedded scene: top-down floor plan with its navigation graph, plus egocentric RGB-D views.

Builds the scene's layout and vision stages first if they are missing. A scene already baked is drawn as it
is; where --config or --image-size asks for other settings than it was baked with, the run stops, unless
--rebake allows baking those stages again (which replaces what runs trained on the scene read).
Example:
  python scripts/show_scene.py --dataset replica --scene apartment_0 --out docs/images/scene_replica_apartment_0.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, positive_int, refuse_stale_stages, run_script, scene_options, user_path  # noqa: E402
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.build import ensure_scenes, missing_stages  # noqa: E402
from asgf_nav.scenes.presets import PRESETS, get_preset  # noqa: E402
from asgf_nav.scenes.scene import Scene  # noqa: E402
from asgf_nav.scenes.store import scene_dir  # noqa: E402
from asgf_nav.viz.scene_sheet import make_scene_sheet  # noqa: E402

STAGES = ("layout", "vision")  # what the sheet draws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=sorted(PRESETS),
        help="scene preset (default: the config's scenes.dataset, replica without --config)",
    )
    parser.add_argument("--scene", required=True, help="scene name, e.g. apartment_0")
    parser.add_argument("--out", type=user_path, required=True, help="PNG file to write")
    parser.add_argument("--views", type=positive_int, default=4, help="number of egocentric views to show")
    parser.add_argument("--data-root", type=user_path, help="store root (default: cfg scenes.data_root)")
    parser.add_argument("--image-size", type=positive_int, help="RGB-D resolution (default: cfg scenes.image_size)")
    parser.add_argument(
        "--rebake", action="store_true", help="bake again the stages baked with other settings than the ones asked for"
    )
    parser.add_argument("--config", type=user_path, help="experiment config (YAML file or name in asgf_nav/configs/)")
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out, figure=True)

    setup_logging("INFO")
    cfg = load_config(args.config, options=scene_options(args))
    dataset = cfg.scenes.dataset
    get_preset(dataset).spec(args.scene)  # an unknown scene is named before the data root is touched
    directory = scene_dir(cfg.scenes.data_root, dataset, args.scene)
    # settings asked for, or stages missing: bake (a training run's store is not re-baked by just looking at it)
    if (args.config or args.image_size) or missing_stages(directory, STAGES):
        if refuse_stale_stages(parser, directory, STAGES, cfg, args.rebake):  # a bake writes there
            flag = "--data-root" if args.data_root else "scenes.data_root"
            check_output(parser, flag, cfg.scenes.data_root, directory=True)
        ensure_scenes(cfg, dataset, [args.scene], STAGES, workers=1)
    make_scene_sheet(Scene(directory), args.out, num_views=args.views)
    print(args.out)
    return 0


if __name__ == "__main__":
    run_script(main)
