"""Visualisation: colour label maps, overlays with a legend, heatmaps and plots."""

from .legend import legend_panel, present_classes
from .overlay import colorize, heatmap_overlay, overlay

__all__ = ["colorize", "overlay", "heatmap_overlay", "legend_panel", "present_classes"]
