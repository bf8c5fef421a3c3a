"""Bake the spectrogram observations of a split's sounds for every (receiver, yaw, source) of its scenes.

The batched env then reads spectrogram misses from these files instead of computing them, which is what
makes CPU training fast for splits with few sounds (the heard task). Sizes: about 36 kB per state at
44.1 kHz, 6.1 GB for the heard sound over the nine Replica training scenes. An interrupted bake resumes;
a file baked from other RIRs, another sound or other settings (its fingerprint {sound}.json differs) is baked
again. Only the scenes' layout and acoustics are read: scenes baked without views will do.

Example: python scripts/bake_spectrograms.py --config replica_heard.yaml --split train --threads 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    add_scene_arguments,
    check_output,
    config_from_args,
    list_item,
    non_negative_int,
    run_script,
    user_path,
)
from asgf_nav.devices import resolve_device  # noqa: E402
from asgf_nav.io import readable_size  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402


def unknown_sounds_problem(cfg, split: str, sounds: list[str]) -> str | None:
    """What is wrong with the --sounds of an embedded world (names the sound bank lacks), or None."""
    from asgf_nav.scenes.soundspaces_import import scene_source
    from asgf_nav.sounds.bank import SoundBank
    from asgf_nav.tasks.world import sound_names

    if scene_source(cfg) == "soundspaces":  # SoundSpaces sounds are files: checked once the world is open
        return None
    bank = SoundBank.load()
    unknown = [name for name in sounds if name not in bank]
    if not unknown:
        return None
    split_sounds = sound_names(cfg, split)
    shown = split_sounds if len(split_sounds) <= 12 else split_sounds[:12] + ["..."]
    return (
        f"the sound bank has no sound {unknown}; the {split} split's sounds ({cfg.task.sound_split} task): {shown} "
        f"(all {len(bank.names())} names of the sound bank by split: asgf_nav/sounds/data/splits.json, "
        "see docs/sounds.md)"
    )


def space_needed(root: Path, missing, sample_rate: int) -> int:
    """Disk space baking ``missing`` ((scene, sound, why) of :func:`stores_to_bake`) still takes: each file's size
    less what its partial file already holds on disk (a bake resumes it or writes it again in place) and what the
    stale file it replaces holds (removed before its bake)."""
    from asgf_nav.tasks.spectrogram_bake import allocated_bytes, partial_path, store_bytes
    from asgf_nav.tasks.spectrogram_store import store_path

    need = 0
    for scene, sound, _ in missing:
        final = store_path(root, scene, sound)
        held = allocated_bytes(partial_path(final)) + allocated_bytes(final)
        need += max(0, store_bytes([scene], sample_rate) - held)
    return need


def build_parser() -> argparse.ArgumentParser:
    """The script's options (a stale store's refusal prints a command for it: tests parse that with this)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", type=user_path, required=True, help="experiment config (YAML file or name in asgf_nav/configs/)"
    )
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--scenes", type=list_item(), nargs="+", help="only these scenes of the split")
    parser.add_argument("--sounds", type=list_item(), nargs="+", help="only these sounds (default: the split's sounds)")
    parser.add_argument(
        "--out",
        type=user_path,
        help="store root (default: task.spectrogram_store; 'auto' = DATA/spectrograms, or the SoundSpaces root's)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be baked and its size, then stop")
    parser.add_argument("overrides", nargs="*", help="config overrides like task.spectrogram_store=/data/spec")
    add_scene_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides may stand on both sides of an option
    setup_logging("INFO")
    cfg = config_from_args(args)
    # imported once the command line and config parse: --help and a usage or config error answer without torch's
    # seconds of start-up
    from asgf_nav.tasks.factory import spectrogram_store_root, split_sound_names
    from asgf_nav.tasks.spectrogram_bake import bake_world, store_bytes, stores_to_bake
    from asgf_nav.tasks.spectrogram_store import store_path
    from asgf_nav.tasks.world import load_world

    if args.out:  # read as task.spectrogram_store is: 'auto' is DATA/spectrograms
        cfg.task.spectrogram_store = args.out
    root = spectrogram_store_root(cfg)
    if root is None:
        parser.error("task.spectrogram_store is off in this config; pass --out DIR")
    if args.out:
        check_output(parser, "--out", root, directory=True)
    problem = unknown_sounds_problem(cfg, args.split, args.sounds) if args.sounds else None
    if problem:
        parser.error(f"--sounds: {problem}")
    if args.threads:
        import torch  # below asgf_nav.cli, whose Ctrl-C hook comes first

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, key="--device")
    cfg.task.sensors = ["spectrogram"]  # the scenes' views are never read here: audio-only scenes suffice
    world = load_world(cfg, args.split, args.scenes)
    sounds = list(args.sounds or split_sound_names(cfg, args.split, world))
    for name in args.sounds or ():  # before any work: a SoundSpaces sound without its file is named here
        world.sound(name)
    missing = stores_to_bake(root, world, sounds)
    for scene, sound, why in missing:
        if store_path(root, scene, sound).exists():
            print(f"{store_path(root, scene, sound)} {why}: it is baked again")
    need = store_bytes([scene for scene, _, _ in missing], world.sample_rate)
    print(
        f"{len(world.scenes)} scenes x {len(sounds)} sounds into {root}: {len(missing)} files to bake, "
        f"about {readable_size(need)}"
    )
    if args.dry_run or not missing:
        return 0
    # the default lies under the data root, which a lab may share read-only (one fully baked serves as it is)
    check_output(parser, "--out" if args.out else "task.spectrogram_store (or --out DIR)", root, directory=True)
    root.mkdir(parents=True, exist_ok=True)
    free, still = shutil.disk_usage(root).free, space_needed(root, missing, world.sample_rate)
    if still > free:
        held = f" more ({readable_size(need - still)} of the files are on disk already)" if still < need else ""
        print(
            f"error: baking needs about {readable_size(still)}{held} but {root} has {readable_size(free)} free; "
            "bake fewer scenes or sounds (--scenes, --sounds) or choose another --out",
            file=sys.stderr,
        )
        return 2
    bake_world(root, world, sounds, device)
    return 0


if __name__ == "__main__":
    run_script(main)
