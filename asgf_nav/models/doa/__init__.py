"""Direction-of-arrival heads: the selective (prompted) binaural network after AV-SSAN, an audio-only CRNN,
classical two-microphone baselines, training data from RIR pools, and the frozen ``doa`` observation."""

from asgf_nav.models.doa.features import AzimuthGrid, StftConfig, circular_distance, relative_azimuth
from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet, doa_loss

__all__ = [
    "AzimuthGrid",
    "DoaNetConfig",
    "SelectiveDoaNet",
    "StftConfig",
    "circular_distance",
    "doa_loss",
    "relative_azimuth",
]
