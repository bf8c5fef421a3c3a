"""Sound bank: one-second source sounds with categories, instances and SoundSpaces-style splits."""

from asgf_nav.sounds.bank import SOUND_SPLITS, SoundBank, SoundBankError, SoundClip

__all__ = ["SOUND_SPLITS", "SoundBank", "SoundBankError", "SoundClip"]
