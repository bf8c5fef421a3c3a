"""Export embedded scenes in the SoundSpaces 1.0 layout (metadata, RIR wavs, views, episodes, sounds).

RIRs are written for every (receiver node, source node, azimuth): about N x S x 4 files per scene, so
choose scenes with --scenes; --skip-existing resumes an interrupted export.

Example: python scripts/export_soundspaces.py --config tiny_heard --out exports/soundspaces --dataset tiny --splits val
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, list_item, run_script, scene_options, user_path  # noqa: E402
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.presets import PRESETS, SPLITS, get_preset  # noqa: E402
from asgf_nav.scenes.soundspaces import DATASETS  # noqa: E402

logger = logging.getLogger("export_soundspaces")


def target_dataset(parser: argparse.ArgumentParser, preset_name: str, as_dataset: str | None) -> str:
    """SoundSpaces dataset to write as: ``--as-dataset``, or the one whose rate and grid match the preset.

    SoundSpaces fixes rate and grid per dataset, so a mismatch is refused here, before the scenes load
    and episodes are generated, rather than by the first scene export.
    """
    preset = get_preset(preset_name)
    if as_dataset is None:
        if preset_name in DATASETS:
            return preset_name
        matching = [
            name
            for name, spec in DATASETS.items()
            if spec.sample_rate == preset.sample_rate and math.isclose(spec.grid_size, preset.grid_size)
        ]
        if not matching:
            parser.error(
                f"--dataset {preset_name} ({preset.sample_rate} Hz, {preset.grid_size} m grid) matches no "
                f"SoundSpaces dataset: {_specs()}"
            )
        return matching[0]
    spec = DATASETS[as_dataset]
    if spec.sample_rate != preset.sample_rate or not math.isclose(spec.grid_size, preset.grid_size):
        parser.error(
            f"--as-dataset {as_dataset} needs {spec.sample_rate} Hz RIRs on a {spec.grid_size} m grid, but "
            f"--dataset {preset_name} has {preset.sample_rate} Hz on a {preset.grid_size} m grid; SoundSpaces "
            f"datasets: {_specs()}"
        )
    return as_dataset


def _specs() -> str:
    return ", ".join(f"{n} ({s.sample_rate} Hz, {s.grid_size} m)" for n, s in sorted(DATASETS.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=user_path, required=True, help="SoundSpaces data root to write")
    parser.add_argument(
        "--dataset", choices=sorted(PRESETS), help="embedded scene preset (default: the config's scenes.dataset)"
    )
    parser.add_argument(
        "--data-root", type=user_path, help="data root of the baked scenes (default: the config's scenes.data_root)"
    )
    parser.add_argument("--as-dataset", choices=sorted(DATASETS), help="SoundSpaces dataset name to write as")
    parser.add_argument(
        "--scenes", type=list_item(), nargs="+", help="only these scenes (default: all scenes of the splits)"
    )
    parser.add_argument("--splits", type=list_item(), nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument(
        "--sound-splits", type=list_item(), nargs="+", choices=("heard", "unheard"), default=["heard", "unheard"]
    )
    parser.add_argument("--skip-existing", action="store_true", help="keep RIR files already written")
    parser.add_argument(
        "--no-views",
        action="store_true",
        help="do not write scene_observations pickles (the scenes then need no baked views)",
    )
    parser.add_argument("--config", type=user_path, help="experiment config (YAML file or name in asgf_nav/configs/)")
    parser.add_argument("overrides", nargs="*", help="config overrides like task.train_episodes_per_scene=100")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on both sides of an option
    cfg = load_config(args.config, args.overrides, scene_options(args))
    args.dataset = cfg.scenes.dataset
    target = target_dataset(parser, args.dataset, args.as_dataset)
    setup_logging("INFO")
    preset = get_preset(args.dataset)
    in_splits = {n for split in args.splits for n in preset.split_scenes(split, cfg.scenes.num_scenes)}
    unknown = sorted(set(args.scenes or []) - in_splits)
    if unknown:  # checked before anything is written, not after the other scenes are exported
        parser.error(f"--scenes: {unknown} are not in splits {args.splits} of preset {args.dataset}; "
                     f"those splits hold {sorted(in_splits)}")  # fmt: skip
    check_output(parser, "--out", args.out, directory=True)
    from asgf_nav.tasks.soundspaces_export import export_splits  # here: --help answers without torch's start-up

    stats = export_splits(cfg, args.out, target, args.splits, args.sound_splits, args.scenes,
                          skip_existing=args.skip_existing, views=not args.no_views)  # fmt: skip
    if stats is None:
        logger.error("nothing to export: no scene of preset %s in splits %s", args.dataset, args.splits)
        return 1
    print(
        f"exported {stats.scenes} scenes as SoundSpaces {target} to {args.out}: {stats.rir_files} RIR files "
        f"({stats.rir_bytes / 1e6:.1f} MB written, {stats.skipped} kept), {stats.episodes} episodes, "
        f"{stats.sounds} sounds"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
