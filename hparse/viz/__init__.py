"""Visualisation: colour label maps, overlays, heatmaps and plots."""

from .overlay import colorize, heatmap_overlay, overlay

__all__ = ["colorize", "overlay", "heatmap_overlay"]
