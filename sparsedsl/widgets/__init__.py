"""Notebook widgets for sparsity (``pip install "sparsedsl[notebook]"``): ``MaskView`` draws any mask (a
SparseTensor of any format, scipy, numpy, torch, attention masks with batch and head sliders) from per-pixel
counts computed by a sparsedsl kernel; ``PruneExplorer`` prunes a weight matrix live and measures a kernel
in each format."""

from .maskview import MaskView
from .prune_explorer import PruneExplorer

__all__ = ["MaskView", "PruneExplorer"]
