"""Bake embedded scenes (layout, RGB-D views, acoustics) into the scene store.

Example: python scripts/build_scenes.py --dataset replica --workers 2 --stages layout vision
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import run_script  # noqa: E402
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.build import STAGE_ORDER, build_scenes  # noqa: E402
from asgf_nav.scenes.presets import PRESETS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=sorted(PRESETS),
        help="scene preset to build (default: the config's scenes.dataset, replica without --config)",
    )
    parser.add_argument("--scenes", nargs="+", help="scene names (default: the preset's scenes)")
    parser.add_argument("--num-scenes", type=int, help="build only this many scenes, keeping split proportions")
    parser.add_argument("--stages", nargs="+", choices=STAGE_ORDER, default=list(STAGE_ORDER))
    parser.add_argument("--workers", type=int, help="parallel scene builds (default: cfg scenes.workers)")
    parser.add_argument("--force", action="store_true", help="rebuild the requested stages even if present")
    parser.add_argument("--data-root", help="store root (default: cfg scenes.data_root)")
    parser.add_argument("--image-size", type=int, help="RGB-D resolution (default: cfg scenes.image_size)")
    parser.add_argument("--config", help="experiment config (YAML file or name in asgf_nav/configs/)")
    parser.add_argument("overrides", nargs="*", help="config overrides like scenes.image_size=64")
    args = parser.parse_args(argv)

    setup_logging("INFO")
    cfg = load_config(args.config, args.overrides)
    if args.data_root:
        cfg.scenes.data_root = args.data_root
    if args.image_size:
        cfg.scenes.image_size = args.image_size
    if args.num_scenes:
        cfg.scenes.num_scenes = args.num_scenes
    dataset = args.dataset or cfg.scenes.dataset
    build_scenes(cfg, dataset, args.scenes, args.stages, workers=args.workers, force=args.force)
    return 0


if __name__ == "__main__":
    run_script(main)
