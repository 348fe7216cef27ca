"""Level types: one module each (dense, compressed, singleton, bitmap, nm)."""

from .base import LevelType, Parent
from .bitmap import Bitmap
from .compressed import Compressed
from .dense import Dense
from .nm import NM
from .singleton import Singleton

__all__ = ["LevelType", "Parent", "Dense", "Compressed", "Singleton", "Bitmap", "NM"]
