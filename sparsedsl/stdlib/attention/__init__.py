"""Sparse attention: attention over a mask of any format, the masks of the published methods,
Scatterbrain, a bitmap KV cache (Mustafar), and a fused block-sparse GPU kernel (a template).

See docs/attention.md. ``attention(q, k, v, mask)`` is one sparsedsl program (SDDMM over the mask,
masked row softmax, SpMM with V) that runs on the CPU and the GPU; ``dense_attention`` is the
reference. Importing this package registers the fused kernel ``attention.block_sparse_flash``.
"""

from . import _flash  # noqa: F401  (registers the fused GPU template)
from ._core import (
           ATTENTION_PROGRAM,
           attention,
           attention_kernel,
           blocked_format,
           dense_attention,
           dense_mask,
           mask_3d,
           restrict_causal,
)
from .kv_cache import BitmapKVCache, decode_attention
from .masks import (
           SparseDPatterns,
           a_shape,
           biformer,
           block_sparse,
           calibrate_channels,
           double_sparsity,
           hip,
           routing,
           seer_gate,
           sliding_window,
           spark_top_k,
           statistical_top_k,
           vertical_slash,
)
from .sparse_lowrank import scatterbrain

__all__ = ["ATTENTION_PROGRAM", "BitmapKVCache", "SparseDPatterns", "a_shape", "attention", "attention_kernel",
           "biformer", "block_sparse", "blocked_format", "calibrate_channels", "decode_attention",
           "dense_attention", "dense_mask", "double_sparsity", "hip", "mask_3d", "restrict_causal", "routing",
           "scatterbrain", "seer_gate", "sliding_window", "spark_top_k", "statistical_top_k", "vertical_slash"]
