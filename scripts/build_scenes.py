"""Bake embedded scenes (layout, RGB-D views, acoustics) into the scene store.

Example: python scripts/build_scenes.py --dataset replica --workers 2 --stages layout vision

The acoustics are baked with the config's acoustics.* settings (the defaults without --config). A run
whose config asks for others bakes them again, so bake with the run's config: for the tiny world's runs,
python scripts/build_scenes.py --config tiny_heard.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    check_output,
    int_at_least,
    list_item,
    non_negative_int,
    positive_int,
    run_script,
    scene_options,
    user_path,
)
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.build import STAGE_ORDER, build_scenes, stages_to_build  # noqa: E402
from asgf_nav.scenes.presets import PRESETS, SPLITS, get_preset  # noqa: E402
from asgf_nav.scenes.store import scene_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=sorted(PRESETS),
        help="scene preset to build (default: the config's scenes.dataset, replica without --config)",
    )
    parser.add_argument("--scenes", type=list_item(), nargs="+", help="scene names (default: the preset's scenes)")
    parser.add_argument(
        "--num-scenes",
        type=int_at_least(len(SPLITS), f"one scene per split {list(SPLITS)}"),
        help=f"build only this many scenes (at least {len(SPLITS)}, at most the preset's), keeping split proportions",
    )
    parser.add_argument("--stages", type=list_item(), nargs="+", choices=STAGE_ORDER, default=list(STAGE_ORDER))
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        help="parallel scene builds, 0: one per CPU core (default: cfg scenes.workers)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild the requested stages even if present")
    parser.add_argument("--data-root", type=user_path, help="store root (default: cfg scenes.data_root)")
    parser.add_argument("--image-size", type=positive_int, help="RGB-D resolution (default: cfg scenes.image_size)")
    parser.add_argument("--config", type=user_path, help="experiment config (YAML file or name in asgf_nav/configs/)")
    parser.add_argument("overrides", nargs="*", help="config overrides like scenes.image_size=64 (before --scenes)")
    args = parser.parse_args(argv)

    setup_logging("INFO")
    cfg = load_config(args.config, args.overrides, scene_options(args))  # a bad --num-scenes is named there
    dataset = cfg.scenes.dataset
    preset = get_preset(dataset)
    names = list(args.scenes) if args.scenes else preset.scene_names(cfg.scenes.num_scenes)
    for name in names:
        preset.spec(name)  # an unknown scene is named (UnknownSceneError) before the data root is touched
    root = cfg.scenes.data_root
    if args.force or any(stages_to_build(scene_dir(root, dataset, n), args.stages, cfg) for n in names):
        check_output(parser, "--data-root" if args.data_root else "scenes.data_root", root, directory=True)
    build_scenes(cfg, dataset, args.scenes, args.stages, workers=args.workers, force=args.force)
    return 0


if __name__ == "__main__":
    run_script(main)
