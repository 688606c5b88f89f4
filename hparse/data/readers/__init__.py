"""Readers for the official dataset layouts (import registers them)."""

from . import atr, ccp, cihp, folder, lip, mhp, pascal, ppss, vip  # noqa: F401
from .base import READERS, Item, Reader, SplitNotFoundError, build_reader

__all__ = ["READERS", "Item", "Reader", "SplitNotFoundError", "build_reader"]
