"""ASGF-Nav: audio-visual navigation with audio spatial state guided fusion."""

__version__ = "0.1.0"
