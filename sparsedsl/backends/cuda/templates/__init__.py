"""Hand-written kernels for loop nests the generic CUDA kernels run badly, registered with the template
registry (``sparsedsl.templates``, stage "loops"): the skinny tensor-core products of N:M and bitmap
weights (``skinny``) and SpGEMM's hash-table rows (``spgemm``). The renderer asks the registry for each
parallel loop (``render.KernelSource``); each template's ``fits`` says why it does not apply, which
``explain`` prints. The generic kernel stays the fallback, and the oracle of the templates' tests."""

from __future__ import annotations

from dataclasses import dataclass

from ....templates import Template, register
from .skinny import skinny_shape
from .spgemm import spgemm_shape


@dataclass(frozen=True)
class LoopNest:
    """What a loops template is matched against: one parallel loop of a rendered function, the
    kernel's arrays, name -> (dtype, ndim), and the function's ``loopir.Output``."""

    loop: object
    arrays: dict
    output: object


def _skinny(nest: LoopNest):
    return skinny_shape(nest.loop, nest.arrays, nest.output)


def _spgemm(nest: LoopNest):
    found = spgemm_shape(nest.loop, nest.arrays)
    return "not a row of a two-phase sparse-output assembly through a workspace (Gustavson's SpGEMM)" \
        if found is None else found


def _fits(shape):
    def fits(nest: LoopNest):
        found = shape(nest)
        return found if isinstance(found, str) else None
    return fits


SKINNY = register(Template("cuda.skinny", "cuda", "loops", fits=_fits(_skinny), build=_skinny,
                           doc="N:M / bitmap weights times 16-64 dense columns on the tensor cores"))
SPGEMM = register(Template("cuda.spgemm", "cuda", "loops", fits=_fits(_spgemm), build=_spgemm,
                           doc="a row's products in a hash table in shared memory, rows binned by length"))
