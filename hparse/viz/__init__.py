"""Visualisation: colour label maps, overlays with a legend and people's outlines, heatmaps and plots."""

from .legend import legend_panel, present_classes
from .overlay import colorize, heatmap_overlay, overlay
from .people import PeopleMarks, draw_people

__all__ = ["colorize", "overlay", "heatmap_overlay", "legend_panel", "present_classes", "PeopleMarks", "draw_people"]
