"""EVA: video-attribute hierarchical prompt tuning for action recognition."""

__version__ = "0.1.0"
