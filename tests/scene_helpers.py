"""Scenes baked for the tests that need real baked data but no views."""

from __future__ import annotations

from pathlib import Path

from asgf_nav.config import ExperimentConfig
from asgf_nav.scenes.build import build_scenes


def bake_audio_only(
    root: Path, scenes: list[str], sources: int = 2, rays: int = 200, max_rir_seconds: float = 0.3
) -> Path:
    """The tiny preset's ``scenes`` baked under ``root`` with layout and cheap acoustics only (seconds)."""
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(root)
    cfg.acoustics.sources_per_scene, cfg.acoustics.rays, cfg.acoustics.ism_order = sources, rays, 1
    cfg.acoustics.max_rir_seconds = max_rir_seconds
    build_scenes(cfg, "tiny", scenes, stages=("layout", "acoustics"), workers=1)
    return root
