"""Scenes baked for the tests that need real baked data but no views."""

from __future__ import annotations

from pathlib import Path

from asgf_nav.config import load_config
from asgf_nav.scenes.build import build_scenes


def cheap_acoustics(sources: int = 2, rays: int = 200, max_rir_seconds: float = 0.3) -> list[str]:
    """Overrides for cheap acoustics: the bake's, and every run's and world's on it (a world refuses scenes
    baked with other acoustics than its config asks)."""
    return [f"acoustics.sources_per_scene={sources}", f"acoustics.rays={rays}", "acoustics.ism_order=1",
            f"acoustics.max_rir_seconds={max_rir_seconds}"]  # fmt: skip


def bake_audio_only(root: Path, scenes: list[str], acoustics: list[str]) -> Path:
    """The tiny preset's ``scenes`` baked under ``root`` with layout and the ``acoustics`` overrides only."""
    cfg = load_config(None, [f"scenes.data_root={root}", *acoustics])
    build_scenes(cfg, "tiny", scenes, stages=("layout", "acoustics"), workers=1)
    return root
