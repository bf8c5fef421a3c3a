"""Convert the MIT KEMAR HRTF shipped inside the PyPI package slab 1.8.2 into a plain array file.

Run once; the result, ``asgf_nav/acoustics/data/mit_kemar.npz``, is committed, so slab is not a
runtime dependency. The wheel is fetched with ``pip download`` into a temporary directory and read
from there; nothing is installed.

Output arrays (conventions of :mod:`asgf_nav.acoustics.hrtf`):
  hrir       (D, 2, T) float16  head-related impulse responses, channel 0 = left ear, 1 = right ear
  azimuth    (D,) float32       degrees, counter-clockwise from straight ahead (90 = left, 270 = right)
  elevation  (D,) float32       degrees above the horizontal plane
  sample_rate ()  int64         44100

Usage: python scripts/convert_hrtf.py [--wheel path/to/slab-1.8.2-py3-none-any.whl] [--out PATH]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from asgf_nav.cli import check_output, run_script, user_path
from asgf_nav.io import atomic_savez
from asgf_nav.logging_utils import setup_logging

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "asgf_nav" / "acoustics" / "data" / "mit_kemar.npz"
SLAB_REQUIREMENT = "slab==1.8.2"


def download_wheel(directory: Path) -> Path:
    """``pip download`` the slab wheel (no dependencies, no install) into ``directory``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", SLAB_REQUIREMENT, "--no-deps", "-q", "-d", str(directory)],
        check=True,
    )
    wheels = sorted(directory.glob("slab-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {SLAB_REQUIREMENT} left no wheel in {directory}")
    return wheels[0]


def read_kemar(wheel: Path, workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Unpack the wheel, import slab from it and return (hrir (D,2,T), azimuth, elevation, rate)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir)
    sys.modules["sounddevice"] = None  # slab imports it at import time; it needs PortAudio, absent here
    sys.path.insert(0, str(workdir))
    import slab  # noqa: PLC0415  (only importable from the unpacked wheel)

    hrtf = slab.HRTF.kemar()
    coords = np.asarray(hrtf.sources.vertical_polar, dtype=np.float64)
    hrir = np.stack([np.asarray(f.data, dtype=np.float64).T for f in hrtf.data])  # (D, 2, T)
    rate = int(round(float(hrtf.samplerate)))
    return hrir, coords[:, 0], coords[:, 1], rate


def check_channel_order(hrir: np.ndarray, azimuth: np.ndarray, elevation: np.ndarray) -> None:
    """A source at azimuth 90 (left) must be louder in channel 0; fail loudly if the layout differs."""
    left = np.flatnonzero((np.abs(azimuth - 90) < 1e-6) & (np.abs(elevation) < 1e-6))
    if left.size == 0:
        raise ValueError("KEMAR set has no direction at azimuth 90, elevation 0")
    energy = (hrir[left[0]] ** 2).sum(axis=-1)
    if not energy[0] > 4 * energy[1]:
        raise ValueError(f"unexpected KEMAR channel layout: energies at azimuth 90 are {energy}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--wheel", type=lambda text: Path(user_path(text)), help="local slab wheel (default: pip download it)"
    )
    parser.add_argument("--out", type=lambda text: Path(user_path(text)), default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.wheel is not None and not zipfile.is_zipfile(args.wheel):
        parser.error(f"--wheel: {args.wheel} is not a wheel (no such file, or not a zip archive)")
    check_output(parser, "--out", args.out)
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        wheel = args.wheel or download_wheel(tmp_path)
        hrir, azimuth, elevation, rate = read_kemar(wheel, tmp_path / "unpacked")
    check_channel_order(hrir, azimuth, elevation)
    peak = float(np.abs(hrir).max())
    if peak > 60000:
        raise ValueError(f"HRIR peak {peak} does not fit float16")
    atomic_savez(
        args.out,
        compressed=True,
        hrir=hrir.astype(np.float16),
        azimuth=azimuth.astype(np.float32) % 360.0,
        elevation=elevation.astype(np.float32),
        sample_rate=np.int64(rate),
    )
    logger.info(
        "wrote %s: %d directions, %d taps, %d Hz, %.0f kB",
        args.out,
        hrir.shape[0],
        hrir.shape[-1],
        rate,
        args.out.stat().st_size / 1024,
    )


if __name__ == "__main__":
    run_script(main)
