"""mgpipe: a reproducible micro-gesture recognition pipeline (RGB + pose heatmap 3D CNNs)."""

__version__ = "0.1.0"
