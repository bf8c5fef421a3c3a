"""The supervised audio model's training recipe: budget and validation share, kept free of heavy imports so the
command line states the defaults without loading torch."""

from __future__ import annotations

# training budget: at most EPOCHS passes, stopping PATIENCE epochs after the lowest validation loss
EPOCHS = 100
PATIENCE = 8
VAL_FRACTION = 0.1  # of the samples (and of each scene's source nodes), held out to report accuracy


def train_size(n: int, val_fraction: float = VAL_FRACTION) -> int:
    """How many of ``n`` samples split_samples trains on (the rest are validated on)."""
    return max(1, int(round(n * (1 - val_fraction))))


# the fewest samples whose split leaves both the training and the validation part non-empty
MIN_SAMPLES = next(n for n in range(2, 1000) if train_size(n) < n)
