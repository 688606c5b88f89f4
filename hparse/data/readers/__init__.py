"""Readers for the official dataset layouts (import registers them)."""

from . import ccp  # noqa: F401
from .base import READERS, Item, Reader, build_reader

__all__ = ["READERS", "Item", "Reader", "build_reader"]
