"""The CUDA backend: loop IR rendered as CUDA C++ (``render``), compiled with NVRTC through
cupy, run as a sequence of host steps:

- an ``Alloc`` is a device allocation (its size is evaluated on the host);
- a parallel ``For`` is one kernel launch (``render`` says in which shape); for a lane-split
  reduction the lanes per iteration (1..32) are chosen per call from the loop's average work;
- a pass of SpGEMM's row-by-row assembly (``templates.spgemm``) is up to three launches (a warp per row,
  then a block per longer row, then a global workspace per longest row), the rows' bins read back once;
- a function that is one dense contraction (``plan.dense_contraction``: the factored
  products of composites, U·(Vᵀ·X)) is ``cupy.tensordot``, that is cuBLAS, for float32/float64;
- the prefix sum of a two-phase assembly (``offs[r + 1] = offs[r] + counts[r]``) is ``cupy.cumsum``;
- any other run of statements is a kernel of one thread (correct, slow: ``explain`` says so).

Operands: dense cupy arrays and torch CUDA tensors (DLPack) are used in place, SparseTensors moved
with ``.to("cuda")`` too; anything else is packed and validated on the host, then copied over.

Scalars assigned in one step and read in another live in a small device array (``sd_state``).
Kernels are specialised to the operands' dtypes at the first call (like numba). The generated
source is written to the sparsedsl cache next to the CPU kernels; cupy keeps the compiled binary
in its own on-disk kernel cache. Kernels do no bounds checks: every tensor was validated when it
was built (DESIGN.md).

Modules: ``device`` (interop: the only one the rest of sparsedsl imports), ``plan`` (host steps and loop
shapes), ``cexpr`` and ``render`` (C++), ``templates/`` (hand-written kernels), ``nvrtc`` (compiling),
``runtime`` (launching), ``compiled`` (the entry point, ``build``, and launch replay).
"""

# What this backend asks of the lowering (see backends/cpu): nothing beyond the defaults; its own
# choices are made when a function is rendered for a signature, by these passes:
LOWERING: dict = {}
# The CUDA backend's passes over a function's steps, in order (``schedule={"passes": {NAME: False}}``
# turns one off): serial loops that only add into the output made parallel with atomics; reductions
# split across lanes; (outer, inner) loops collapsed into one grid; reductions nested in sequential code
# split across lanes; vector loads of dense rows; registered templates (templates/).
PASSES = ("atomic_scatter", "lane_split", "collapse", "nested_lanes", "vector_loads", "templates")
