#!/usr/bin/env python
"""Train an audio-visual navigation agent with PPO (or DD-PPO under torchrun).

python scripts/train_ppo.py --config replica_unheard.yaml
python scripts/train_ppo.py --config replica_heard.yaml model.policy=av_nav ppo.num_envs=16
python -m torch.distributed.run --nproc_per_node 2 scripts/train_ppo.py --config replica_unheard.yaml   # torchrun
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import add_config_arguments, check_config_beside_its_run, config_from_args, run_script  # noqa: E402
from asgf_nav.config import describe_config  # noqa: E402
from asgf_nav.experiment import run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="replica_unheard.yaml")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in train.run_dir; where the directory holds no checkpoint at "
        "all a new run starts (with a warning), so a job script can always pass it (one holding only best.pt "
        "is refused)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every config key with its value (the overrides applied) and what it sets, as YAML that "
        "--config reads, and exit without training",
    )
    args = parser.parse_args()
    cfg = config_from_args(args)
    if args.print_config:
        print(describe_config(cfg), end="")
        return
    check_config_beside_its_run(args, cfg)
    run_training(cfg, resume=args.resume)


if __name__ == "__main__":
    run_script(main)
