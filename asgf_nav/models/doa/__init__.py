"""Direction-of-arrival heads: the selective (prompted) binaural network after AV-SSAN, an audio-only CRNN,
classical two-microphone baselines, training data from RIR pools, and the frozen ``doa`` observation.

The names below are loaded on first use, so that ``models.doa.config`` is read without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asgf_nav.models.doa.features import AzimuthGrid, StftConfig, circular_distance, relative_azimuth
    from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet, doa_loss

_HOMES = {
    "AzimuthGrid": "features",
    "StftConfig": "features",
    "circular_distance": "features",
    "relative_azimuth": "features",
    "DoaNetConfig": "network",
    "SelectiveDoaNet": "network",
    "doa_loss": "network",
}
__all__ = [
    "AzimuthGrid",
    "DoaNetConfig",
    "SelectiveDoaNet",
    "StftConfig",
    "circular_distance",
    "doa_loss",
    "relative_azimuth",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"asgf_nav.models.doa.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too: tab completion and help() list them
    return sorted(set(globals()) | set(__all__))
