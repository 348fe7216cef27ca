"""The pipeline, start to end, and the public entry points that use it.

    source -> parse -> check -> rewrite -> lower -> render + compile -> call

``Kernel`` holds a parsed program; calling it binds operands (packing them into the declared
formats), checks shapes and dtypes, and runs one compiled function per statement, specialised
and cached by the operands' formats and dtypes.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from . import composite, settings, templates
from .backends import cpu
from .backends import cuda as cuda_backend
from .backends.cpu.compile import PARALLEL_THRESHOLD
from .backends.cuda import compiled as cuda
from .backends.cuda import device as cuda_device
from .backends.cuda import render as cuda_render
from .errors import DSLError, FormatError
from .lang import ast as A
from .lang import loopir
from .lang.check import TensorType, check
from .lang.formats import Format, as_format
from .lang.interp import interpret
from .lang.levels.base import array_module, index_dtype
from .lang.lower import lower
from .lang.rewrite import rewrite
from .lang.syntax import check_format, parse_python, parse_statements
from .tensor import SparseTensor, asformat, from_coordinates

# Schedule choices a user may force (``compile(..., schedule={"workspace": "hash"})``); by default
# the lowering chooses (a hash workspace only when a dense one would be too wide).
SCHEDULE_OPTIONS = {"workspace": ("dense", "hash"), "templates": (True, False),
                    "passes": "{pass name: False} for a backend's loop-IR passes to skip"}


class Kernel:
    """A compiled sparse kernel: call it with operands by name (or by position, in parameter order)."""

    def __init__(self, program: A.Program, schedule: dict | None = None):
        self.program = program
        self.schedule = dict(schedule or {})
        unknown = set(self.schedule) - SCHEDULE_OPTIONS.keys()
        bad = {k: v for k, v in self.schedule.items() if k in SCHEDULE_OPTIONS and not _allowed(k, v)}
        if unknown or bad:
            raise DSLError(f"schedule options are {SCHEDULE_OPTIONS}; got {self.schedule}", program.span)
        check(program)  # structural errors surface now, not at the first call
        self._plans: dict = {}
        settings.kernels.add(self)  # sparsedsl.config(check=...) replans it

    def __reduce__(self):
        # a kernel travels as its program and schedule, never as machine code: the receiving process
        # plans it again at its first call, loading the compiled statements from its disk cache
        return Kernel, (self.program, self.schedule)

    @property
    def name(self) -> str:
        return self.program.name

    def __repr__(self):
        ps = ", ".join(f"{p.name}: {p.format or p.kind}" for p in self.program.params)
        outs = ", ".join(f"{p.name}: {p.format or 'dense'}" for p in self.program.outputs)
        return f"<sparsedsl kernel {self.name}({ps}) -> {outs}>"

    def _repr_html_(self) -> str:
        """In a notebook: the signature, the statements and explain on sample operands (sparsedsl/display.py)."""
        from . import display

        return display.kernel_html(self)

    # ---- binding ------------------------------------------------------------------------
    def bind(self, args, kwargs, backend: str = "cpu") -> dict:
        args, kwargs = _operands(args, kwargs)
        params = self.program.params
        if len(args) > len(params):
            raise DSLError(f"{self.name}() takes {len(params)} operands, got {len(args)}", self.program.span)
        values = dict(zip((p.name for p in params), args))
        for k, v in kwargs.items():
            if k in values:
                raise DSLError(f"{self.name}() got operand {k!r} twice", self.program.span)
            if not any(p.name == k for p in params):
                raise DSLError(f"{self.name}() has no operand {k!r}; its operands are "
                               f"{', '.join(p.name for p in params)}", self.program.span)
            values[k] = v
        bound = {}
        for p in params:
            if p.name not in values:
                raise DSLError(f"no operand was given for {p.name!r}", p.span)
            v = values[p.name]
            if isinstance(v, SparseTensor) and v.format.is_dense:
                v = v.values.reshape(v.shape)  # a dense tensor is its array, which kernels read as it is
            if isinstance(v, composite.Composite):
                bound[p.name] = v.to(backend)  # its factors, where the kernel runs
            else:
                bound[p.name] = _pack(_widen_half(v), p) if backend == "cpu" else cuda_device.pack(v, p, _pack)
        return bound

    def _bind_ready(self, args, kwargs):
        """(bound operands, plan key) when every operand is already what the CPU kernel takes: a
        C-contiguous numpy array for a dense parameter, a host SparseTensor in the declared format.
        Anything else returns None and goes through ``bind``, which converts and checks. This keeps
        the per-call cost of a compiled kernel near that of one numba dispatch."""
        params = self.program.params
        if len(args) + len(kwargs) != len(params) or len(args) > len(params):
            return None
        if args:
            values = dict(zip((p.name for p in params), args))
            values.update(kwargs)
        else:
            values = kwargs  # a fresh dict of this call's own
        key, host, device = ["cpu"], False, False
        for p in params:
            v = values.get(p.name)
            t = type(v)
            if t is SparseTensor and not v.format.is_dense:
                # no check against a declared format here: plans are keyed by the bound (converted)
                # formats, so an operand in another format finds no plan and goes through ``bind``
                key.append((p.name, v.shape, v.dtype, v.format))
                if type(v.values) is np.ndarray:
                    host = True
                else:
                    device = True
            elif t is np.ndarray or t is cuda_device.array_type():  # (None until cupy is imported)
                if not _dense_as_is(v, p):
                    return None
                key.append((p.name, v.shape, v.dtype, False, None))  # as plan() keys it (not a Python number)
                if t is np.ndarray:
                    host = True
                else:
                    device = True
            else:
                return None
        if device:
            if host:  # host and device operands: ``bind`` moves the host ones
                return None
            key[0] = "cuda"
        return values, tuple(key)

    def plan(self, bound: dict, backend: str = "cpu"):
        key = (backend,) + tuple((n, v.shape, v.dtype, v.format) if isinstance(v, SparseTensor) else
                    (n, v.type) if isinstance(v, composite.Composite) else
                    (n, np.shape(v), _dtype(v), type(v) in (int, float, bool), getattr(v, "sd_storage", None))
                    for n, v in bound.items())
        plan = self._plans.get(key)
        if plan is None:
            types = {n: (TensorType(v.shape, v.dtype, v.format) if isinstance(v, SparseTensor) else
                         v.type if isinstance(v, composite.Composite) else _type_of(v))
                     for n, v in bound.items()}
            plan = self._plans[key] = _Plan(self.program, types, backend, self.schedule)
        return plan

    def __call__(self, /, *args, backend: str | None = None, **kwargs):
        """Run on ``backend`` "cpu" (numba) or "cuda" (cupy); by default "cuda" when an operand is on
        a GPU (cupy, cupyx.scipy.sparse, torch CUDA, ``SparseTensor.to("cuda")``), else "cpu".

        Operands go by position (parameter order), by keyword, or in one dict, the way to pass an
        operand named ``backend``: ``kernel({"backend": B, "x": x})``. An operand whose type defines
        ``__sparsedsl_call__(operand, kernel, operands)`` runs the call its own way (a partitioned
        tensor of ``sparsedsl.dask``: one task per block)."""
        if args and type(args[0]) is dict:
            args, kwargs = _operands(args, kwargs)
        fast = self._bind_ready(args, kwargs)
        if fast is not None and backend in (None, fast[1][0]):
            plan = self._plans.get(fast[1])
            if plan is not None and plan.single is not None:
                return plan.single(fast[0])
            if plan is not None:
                results = plan.run(fast[0])
                outs = [results[o.name] for o in self.program.outputs]
                if plan.backend == "cuda":
                    outs = cuda_device.finish(outs, [])
                return outs[0] if len(outs) == 1 else tuple(outs)
        for v in list(args) + list(kwargs.values()):  # an operand that runs kernels its own way (Dask)
            hook = getattr(type(v), "__sparsedsl_call__", None)
            if hook is not None:
                return hook(v, self, {**dict(zip((p.name for p in self.program.params), args)), **kwargs})
        backend = _backend(backend, args, kwargs)
        bound = self.bind(args, kwargs, backend)
        plan = self.plan(bound, backend)
        results = plan.run(bound)
        outs = [results[o.name] for o in self.program.outputs]
        if backend == "cuda":
            outs = cuda_device.finish(outs, list(args) + list(kwargs.values()))
        elif _all_half(list(args) + list(kwargs.values())):  # float16 computes in float32, is stored float16
            outs = [o.astype(np.float16) if o.dtype == np.float32 and isinstance(o, np.ndarray) else o for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def stages(self, /, *args, backend: str | None = None, **kwargs) -> dict:
        """Each pipeline stage's output for these operands, by name (for ``explain``, the REPL's
        ``:show`` and the notebook widgets):

        ``"parsed"``: the program as written (``lang.ast.Program``); ``"checked"``: bound to the
        operands, implicit sums placed, types of every tensor (``lang.check.Checked``);
        ``"template"``: the program template chosen, and why the others were not
        (``templates.Selection``); ``"rewritten"``: composites expanded, nested reductions hoisted into
        temporaries; ``"loop_ir"``: one ``lang.loopir.Function`` per statement (``loopir.dump`` prints
        them); ``"source"``: the backend's source per statement: numba Python, or for ``backend="cuda"``
        the plan of host steps and kernels with their launch configuration, the loops templates chosen
        and rejected, and the CUDA C of every kernel variant (rendered without running: no GPU needed);
        ``"notes"``: what the rewrite and the template selection decided; ``"statement_notes"``: per
        statement, the lowering's decisions (loop order, workspaces, passes), as ``explain`` prints them.
        """
        if backend == "cuda" and not cuda_device.available():  # render-only: the operands stay on the host
            bound = self.bind(*_operands(args, kwargs), "cpu")
        else:
            backend = _backend(backend, args, kwargs)
            bound = self.bind(args, kwargs, backend)
        plan = self.plan(bound, backend)
        sources = [str(source) for _, _, _, source in plan.steps] if backend == "cpu" else plan.cuda_sources(bound)
        return {"parsed": self.program, "checked": plan.checked, "template": plan.selection,
                "rewritten": plan.rewritten, "loop_ir": [low.function for _, low, _, _ in plan.steps],
                "source": sources, "notes": list(plan.rewritten.notes) + plan.selection.notes(),
                "statement_notes": [list(low.notes) for _, low, _, _ in plan.steps]}

    def reference(self, /, *args, **kwargs):
        """Evaluate with the dense interpreter (the test oracle) instead of compiled code."""
        bound = self.bind(args, kwargs)
        plan = self.plan(bound)
        res = interpret(plan.checked, {n: v.materialize() if isinstance(v, composite.Composite) else v
                                       for n, v in bound.items()}, from_coordinates)
        outs = [res[o.name] for o in self.program.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _operands(args, kwargs):
    """(args, kwargs) with operands given as one dict merged into the keyword ones: a dict is never an
    operand, and in a dict any name can be an operand's, ``backend`` or ``expr`` too."""
    if len(args) != 1 or type(args[0]) is not dict:
        return args, kwargs
    twice = args[0].keys() & kwargs.keys()
    if twice:
        raise DSLError(f"operand {sorted(twice)[0]!r} is given twice, in the dict of operands and by keyword")
    return (), {**args[0], **kwargs}


def _backend(backend, args, kwargs) -> str:
    if backend is None:
        gpu = any(cuda_device.on_device(v) for v in list(args) + list(kwargs.values()))
        backend = "cuda" if gpu else "cpu"
    if not isinstance(backend, str) or backend not in ("cpu", "cuda"):
        got = repr(backend) if isinstance(backend, str) else f"an object of type {type(backend).__name__}"
        raise ValueError(f"backend must be 'cpu' or 'cuda', got {got}; an operand named 'backend' goes in "
                         f"the dict of operands: kernel({{'backend': ..., ...}}) or compute(expr, {{'backend': ...}})")
    if backend == "cuda":
        cuda_device.cupy()  # raises CudaUnavailable with the install hint
    return backend


def _dtype(v):
    return v.dtype if hasattr(v, "__cuda_array_interface__") else np.asarray(v).dtype


def _type_of(v):
    if type(v) in (int, float, bool):
        return type(v)  # weak in numpy's promotion: the checker keeps float32 * 2.5 float32
    arr = v if hasattr(v, "__cuda_array_interface__") else np.asarray(v)
    return arr.dtype if arr.ndim == 0 else \
        TensorType(arr.shape, arr.dtype, as_format("dense", arr.ndim), getattr(v, "sd_storage", None))


def _widen_half(v):
    """float16 on the CPU: computed in float32 (as on the GPU), the result stored as float16 again."""
    return v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float16 else v


def _all_half(values) -> bool:
    """Every floating array operand is float16 (numpy's result type is then float16)."""
    floats = [v.dtype for v in values if isinstance(v, np.ndarray | SparseTensor) and v.dtype.kind == "f"]
    return bool(floats) and all(dt == np.float16 for dt in floats)


def _dense_as_is(value, param: A.Param) -> bool:
    """A numpy (or cupy) array a kernel can read as it is for a dense parameter: C-contiguous,
    signed or float."""
    dt = value.dtype
    return (param.kind == "tensor" and param.format in (None, "dense") and dt.kind in "bif" and dt.itemsize <= 8
            and (dt != np.float16 or type(value) is not np.ndarray)  # host float16 is widened (_widen_half)
            and value.flags.c_contiguous)


def _pack(value, param: A.Param):
    """Put an operand into its declared format (numpy arrays stay numpy for dense operands)."""
    if isinstance(value, composite.Composite):
        return value.to("cpu")  # algebra over its factors, whatever format is declared: the rewrite stage expands it
    if isinstance(value, np.ndarray) and _dense_as_is(value, param):
        return value  # the common case: a dense numpy operand, used as it is
    if isinstance(value, SparseTensor) and param.format is not None and not value.format.is_dense and \
            value.format == as_format(param.format, value.ndim):
        return value
    if param.kind == "scalar":
        if type(value) is int and not -2**63 <= value < 2**63:
            raise DSLError(f"scalar {param.name!r} = {value} does not fit int64; pass it as a float", param.span)
        if type(value) in (int, float, bool):
            return value  # a Python number stays one: weak in numpy's promotion
        arr = np.asarray(value)
        if arr.ndim != 0 or arr.dtype.kind not in "biuf":
            raise DSLError(f"{param.name!r} is a scalar parameter; got {type(value).__name__}", param.span)
        return arr[()]
    try:
        if isinstance(value, SparseTensor):
            ndim = value.ndim
        elif hasattr(value, "shape") and hasattr(value, "ndim"):
            ndim = value.ndim
        else:
            value = np.asarray(value)
            ndim = value.ndim
        fmt = as_format(param.format, ndim) if param.format is not None else None
        if fmt is None:
            if isinstance(value, SparseTensor):
                return value
            import scipy.sparse as sp

            fmt = as_format("csr" if sp.issparse(value) else "dense", ndim)
        if fmt.is_dense:
            arr = value.to_numpy() if isinstance(value, SparseTensor) else (
                value.toarray() if hasattr(value, "toarray") else np.asarray(value))
            arr = np.ascontiguousarray(arr)
            if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
                raise FormatError(f"dtype {arr.dtype} is not supported")
            return asformat(arr, fmt).values.reshape(arr.shape) if arr.dtype.kind == "u" else arr
        return asformat(value, fmt)
    except FormatError as exc:
        raise FormatError(f"operand {param.name!r}: {exc}") from None


class _Plan:
    """A program specialised to operand types: checked, rewritten, lowered, compiled."""

    def __init__(self, program: A.Program, types: dict, backend: str = "cpu", schedule: dict | None = None):
        self.checked = check(program, types)                     # bind & check against operands
        self.selection = templates.select_program(self.checked, backend, (schedule or {}).get("templates", True))
        self.rewritten = rewrite(self.checked)                   # nested reductions -> temporaries
        self.steps, self.arguments = [], []
        for k, st in enumerate(self.rewritten.statements):
            low = lower(self.rewritten, st, k, _lowering_options(backend, schedule))  # loop IR
            if backend == "cuda":  # the render passes a schedule turned off (backends.cuda.PASSES)
                low.function.hints["passes_off"] = frozenset(n for n, on in (schedule or {}).get("passes", {}).items()
                                                             if not on)
            problems = loopir.verify(loopir.Module([low.function], low.function.name))
            if problems:
                raise AssertionError("invalid loop IR: " + "; ".join(problems))
            build = cuda.build if backend == "cuda" else cpu.build
            zeros = _allocator(backend, low.overwrites)  # outputs where the kernel runs
            fn, source = build(low.function)                     # render + compile (cached)
            ttype = self.rewritten.types[st.target.tensor]
            whats = [low.arguments[p] for p in low.function.params]
            self.steps.append((st, low, fn, source))
            self.arguments.append(_argument_function(whats, ttype, self.rewritten, low.dense_volume, zeros=zeros))
            _dump(low, source)
        self.backend = backend
        # the generated steps are built either way: the fallback, and the oracle of a template's tests
        self.fused = self.selection.template.build(self.selection.match) if self.selection.template else None
        self.single = None if self.fused else self._single()

    def _single(self):
        """For one CPU statement with one dense output: a function env -> that output, the whole
        per-call path of a small kernel (run() does the same, with bookkeeping for many steps)."""
        if len(self.steps) != 1 or self.backend != "cpu" or self.steps[0][1].converted or self.rewritten.derived:
            return None
        st, low, fn, _ = self.steps[0]
        ttype = self.rewritten.types[st.target.tensor]
        if self.rewritten.outputs != (st.target.tensor,) or not ttype.format.is_dense or not ttype.shape:
            return None
        return _argument_function([low.arguments[p] for p in low.function.params], ttype, self.rewritten,
                                  low.dense_volume, fn, _allocator("cpu", low.overwrites))

    def run(self, bound: dict) -> dict:
        c = self.rewritten
        if self.fused is not None:  # a program template: its outputs, renamed to the program's
            m = self.selection.match
            results = self.fused(m.operands(bound))
            return {m.names[p]: v for p, v in results.items()}
        env = composite.bind(c, bound) if c.derived else bound  # factors, split operands (bound: the caller's own)
        for (st, low, fn, _), arguments in zip(self.steps, self.arguments):
            target = st.target.tensor
            ttype = c.types[target]
            converted = {k: asformat(env[st_acc.tensor], fmt) for k, fmt in low.converted.items()
                         for st_acc in [_access(st, k)]} if low.converted else None
            args, work = arguments(env, converted)
            result = fn(*args, work=work)
            if not ttype.shape:  # a scalar result: a 0-d array, as numpy's reductions give
                result = result.reshape(())
            env[target] = result if ttype.format.is_dense else _assemble(result, low, ttype)
        return composite.unsplit(c, {name: env[name] for name in c.outputs}) if c.derived else \
            {name: env[name] for name in c.outputs}

    def cuda_sources(self, bound: dict) -> list:
        """Per statement, the CUDA plan and source for these operands: rendered without running (no GPU
        needed), or, for a statement that has run, its last launches and the kernels it compiled."""
        c = self.rewritten
        env = composite.bind(c, bound) if c.derived else bound
        out = []
        for st, low, _, compiled in self.steps:
            ttype = c.types[st.target.tensor]
            if compiled.specs:  # it ran: what it launched last, and the variants it compiled
                out.append(str(compiled))
            else:
                converted = {k: asformat(env[_access(st, k).tensor], fmt) for k, fmt in low.converted.items()}
                args = [self.argument(low.arguments[p], env, converted, ttype, host=True)
                        for p in low.function.params]
                out.append(cuda_render.rendered(low.function, args).describe())
            env[st.target.tensor] = np.zeros(ttype.shape, ttype.dtype) if ttype.format.is_dense else \
                from_coordinates(np.zeros((len(ttype.shape), 0), np.int64), np.zeros(0, ttype.dtype),
                                 ttype.shape, ttype.format)  # a later statement reads it: its types only
        return out

    def argument(self, what: tuple, env, converted, ttype, host: bool = False):
        """The argument ``what`` describes, for these operands (tests use it)."""
        (arg,), _ = _argument_function([what], ttype, self.rewritten, 0,
                                       zeros=_allocator("cpu" if host else self.backend, False))(env, converted)
        return arg


def _allowed(option: str, value) -> bool:
    if option == "passes":  # {pass name: on?} for the passes some backend declares
        known = set(cpu.LOWERING.get("passes", ())) | set(cuda_backend.PASSES)
        return isinstance(value, dict) and set(value) <= known and all(isinstance(v, bool) for v in value.values())
    return value in SCHEDULE_OPTIONS[option]


def _lowering_options(backend: str, schedule: dict | None) -> dict:
    """What the lowering is asked for: the backend's declared options (``LOWERING``), the user's
    schedule choices, and the backend's passes less those the schedule turns off."""
    schedule = schedule or {}
    declared = (cuda_backend if backend == "cuda" else cpu).LOWERING
    off = {name for name, on in schedule.get("passes", {}).items() if not on}
    return {**declared, **{k: v for k, v in schedule.items() if k not in ("templates", "passes")},
            "passes": tuple(p for p in declared.get("passes", ()) if p not in off)}


def _allocator(backend: str, overwrites: bool):
    """How a step's dense output is allocated where it runs: zeroed, or not when the kernel stores every element."""
    if backend == "cuda":
        return cuda_device.empty if overwrites else cuda_device.zeros
    return np.empty if overwrites else np.zeros


def _argument_function(whats: list, ttype, checked, dense_volume: int, compiled=None, zeros=np.zeros):
    """One Python function (env, converted copies) -> (arguments, work) for a step, generated from
    what each argument is (``Lowered.arguments``): the per-call path of a small kernel is then one
    call, not a getter per argument. ``work`` (array elements the call touches) picks the CPU's
    serial or parallel build. ``zeros`` allocates outputs where the kernel runs. Given ``compiled``
    (a CPU step's ``backends.cpu.compile.Compiled``), the function calls it and returns its result."""
    lines, names, sized, consts = [], [], [], {"zeros": zeros, "out_shape": ttype.shape or (1,),  # 0-d: 1 element
                                              "out_dtype": ttype.dtype, "scattered": _scattered,
                                              "threshold": PARALLEL_THRESHOLD}
    tensors: dict = {}
    late = []  # needs the work first: judging coordinates costs more than a small call
    for k, what in enumerate(whats):
        kind, v = what[0], f"a{k}"
        if kind == "scattered":
            pos, crd = (f"a{whats.index(w)}" if w else "None" for w in what[1:])
            late.append(f"{v} = scattered({pos}, {crd}) if work >= threshold else 0")
        elif kind == "out":
            lines.append(f"{v} = env[{what[1]!r}]" if len(what) > 1 else f"{v} = zeros(out_shape, dtype=out_dtype)")
            sized.append(v)
        elif kind == "out_cap":
            lines.append(f"{v} = 1024")
        elif kind == "extent":
            lines.append(f"{v} = {int(checked.extents[what[1]])}")
        elif kind == "scalar":
            lines.append(f"{v} = env[{what[1]!r}]")
        else:
            name, copy = what[1], what[2]  # the operand, or its copy converted to the format the loops need
            if (name, copy) not in tensors:
                tensors[name, copy] = f"t{len(tensors)}"
                source = f"conv[{copy!r}]" if copy is not None else f"env[{name!r}]"
                lines.append(f"{tensors[name, copy]} = {source}")
            t = tensors[name, copy]
            if kind == "dim":
                lines.append(f"{v} = {t}.shape[{int(what[3])}]")
            elif kind == "level":
                lines.append(f"{v} = {t}.levels[{int(what[3])}][{what[4]!r}]")
                sized.append(v)
            else:  # values: of a sparse tensor, or the dense array itself
                if copy is not None:
                    lines.append(f"{v} = {t}.values if type({t}) is SparseTensor else {t}")
                elif not checked.types[name].shape:  # a 0-d tensor: read as its one element
                    lines.append(f"{v} = {t}.reshape(1)")
                else:
                    lines.append(f"{v} = {t}" if checked.types[name].format.is_dense else f"{v} = {t}.values")
                sized.append(v)
        names.append(v)
    listed = ", ".join(names)
    lines += [f"work = max({int(dense_volume)}, {' + '.join(f'{v}.size' for v in sized) or '0'})", *late]
    if compiled is None:
        tail = [f"return ({listed}{',' if len(names) == 1 else ''}), work"]
    else:
        consts.update(serial=compiled.serial, compiled=compiled)
        tail = [f"return serial({listed}) if work < threshold else compiled({listed}, work=work)"]
    consts["SparseTensor"] = SparseTensor
    src = "def arguments(env, conv=None):\n" + "".join(f"    {ln}\n" for ln in lines + tail)
    exec(src, consts)  # noqa: S102 - the source is built above from names the checker accepted
    return consts["arguments"]


def _scattered(pos, crd, rows: int = 64, run: int = 8) -> int:
    """1 when a level's stored coordinates lie far apart within a row (random gathers, which the
    hardware prefetcher cannot follow and a software prefetch pays for), else 0: the median gap
    between neighbours over the first ``run`` entries of up to ``rows`` rows spread over the level
    (with no ``pos``, runs spread over ``crd``)."""
    if pos is None:
        starts = np.linspace(0, max(len(crd) - run, 0), min(rows, len(crd)), dtype=np.int64)
        ends = np.minimum(starts + run, len(crd))
    else:
        r = np.linspace(0, len(pos) - 2, min(rows, len(pos) - 1), dtype=np.int64)
        starts, ends = pos[r].astype(np.int64), pos[r + 1].astype(np.int64)
    idx = starts[:, None] + np.arange(run + 1)
    ok = idx[:, 1:] < ends[:, None]
    if len(crd) == 0 or not ok.any():
        return 0
    c = crd[np.minimum(idx, len(crd) - 1)].astype(np.int64)
    return int(np.median(np.abs(np.diff(c, axis=1))[ok]) > 16)


def _assemble(result, low, ttype) -> SparseTensor:
    """The output tensor from what a sparse-output kernel returned (see ``Lowered.assembly``)."""
    if low.assembly == "csr":
        offs, crd, vals = result
        idx = index_dtype(max(ttype.shape[ttype.format.levels[1].dim], len(crd)))
        levels = [{}, {"pos": offs.astype(idx), "crd": crd.astype(idx, copy=False)}]
        return SparseTensor(ttype.format, ttype.shape, levels, vals, check=False)
    if low.assembly == "coords":
        result = result[1:]
    *coords, vals = result
    xp = array_module(vals)  # packed where the kernel ran (cupy entries: on the device)
    coords = xp.stack(coords) if coords else xp.zeros((0, len(vals)), dtype=np.int64)
    return from_coordinates(coords, vals, ttype.shape, ttype.format, presorted=low.sorted_output)


def _access(st, k):
    return [n for n in A.walk(st.value) if isinstance(n, A.Access)][k]


def _dump(low, source):
    what = os.environ.get("SPARSEDSL_DUMP", "")
    if "lower" in what:
        print(loopir.dump(loopir.Module([low.function], low.function.name)))
    if "render" in what:
        print(source)


# ---- public entry points ------------------------------------------------------------------


def compile(expr: str, formats: dict | None = None, /, *, out_format=None, name: str = "kernel",  # noqa: A001
            schedule: dict | None = None, **more_formats) -> Kernel:
    """Compile index notation: ``compile("y[i] = A[i,j] * x[j]", A="csr", x="dense")``.

    Operands named in ``formats`` get that format; others take the format of what is passed.
    Formats go by keyword or in a dict after the expression, where any operand name works, an
    option's too: ``compile("y[i] = name[i,j] * x[j]", {"name": "csr"})``.
    The output is the last statement's target; ``let`` statements are temporaries. ``schedule``
    overrides the lowering's choices (``SCHEDULE_OPTIONS``).
    """
    if not isinstance(formats, dict | None):
        raise TypeError(f"compile()'s second argument is a dict of operand formats, such as {{'A': 'csr'}}; got "
                        f"an object of type {type(formats).__name__} (formats also go by keyword: A='csr')")
    _, formats = _operands(() if formats is None else (formats,), more_formats)
    stmts = parse_statements(expr)
    program = _program(stmts, formats, out_format, name)
    return Kernel(program, schedule)


def _program(stmts, formats, out_format, name):
    """A Program for a one-liner: operands in order of first use, scalars after them."""
    defined, params, scalars = set(), [], []
    for st in stmts:
        for node in A.walk(st.value):
            if isinstance(node, A.Access) and node.tensor not in defined and \
                    node.tensor not in [p.name for p in params]:
                fmt = check_format(formats.get(node.tensor), node.span, repr(node.tensor))
                params.append(A.Param(node.span, node.tensor, "tensor", fmt))
            if isinstance(node, A.Scalar) and node.name not in scalars:
                scalars.append(node.name)
        defined.add(st.target.tensor)
    tensors = {p.name for p in params}
    scalars = [s for s in scalars if s not in tensors]  # a name used both ways: check() says where
    params += [A.Param(stmts[0].span, s, "scalar", None) for s in scalars]
    out, where = stmts[-1].target.tensor, stmts[-1].target.span
    if out in tensors:
        raise DSLError(f"'{out}' is an operand of this expression and cannot also be its result: a kernel does not "
                       f"change its operands; assign to a new name, e.g. 'y[i] = ...'", where)
    if not isinstance(out_format, str | Format | None):
        raise DSLError(f"out_format must be a format name such as 'csr', got an object of type "
                       f"{type(out_format).__name__}; an operand named 'out_format' goes in the dict of operands "
                       f"(compute(expr, {{'out_format': ...}}))", where)
    out_fmt = check_format(out_format or formats.get(out) or "dense", where, f"the output {out!r}")
    outputs = (A.Param(where, out, "tensor", out_fmt),)
    stmts = [A.Assign(s.span, s.target, s.value, s.target.tensor != out) for s in stmts]
    return A.Program(stmts[0].span, name, tuple(params), outputs, tuple(stmts))


def compute(expr: str, operands: dict | None = None, /, *, out_format=None, backend: str | None = None,
            **more_operands):
    """Evaluate index notation once, like ``numpy.einsum``: ``compute("y[i] = A[i,j]*x[j]", A=A, x=x)``.

    Operands go by keyword or in a dict after the expression, where any name works, an option's
    too: ``compute("y[i] = backend[i,j] * x[j]", {"backend": B, "x": x})``.
    """
    try:
        kernel = _compiled(expr, out_format)
    except TypeError:  # an unhashable out_format: compile() says what it takes
        kernel = compile(expr, out_format=out_format)
    return kernel(*(() if operands is None else (operands,)), backend=backend, **more_operands)


@functools.lru_cache(maxsize=256)
def _compiled(expr: str, out_format) -> Kernel:
    """``compute``'s kernels, kept by expression and output format; each keeps its plans by the
    operands' formats, dtypes and backend, so a repeated call costs a compiled kernel's call."""
    return compile(expr, out_format=out_format)


def sparse_kernel(fn=None, /, *, schedule: dict | None = None):
    """Decorator: a Python function whose annotations give formats and whose body is index notation.

    >>> @sparse_kernel
    ... def spmv(A: "csr", x: "dense") -> "dense":
    ...     y[i] = A[i, j] * x[j]
    ...     return y

    ``@sparse_kernel()`` and ``@sparse_kernel(schedule={...})`` work too; a Kernel decorated
    again is the same kernel.
    """
    def decorate(f):
        if isinstance(f, Kernel):
            return f if schedule is None else Kernel(f.program, schedule)
        return Kernel(parse_python(f), schedule)

    return decorate if fn is None else decorate(fn)


def explain(kernel: Kernel | str, /, *args, backend: str | None = None, **kwargs) -> str:
    """The loop order, co-iteration, workspaces, templates, passes and generated source of ``kernel``
    (or of an expression, as ``compute`` takes it) for these operands; with ``backend="cuda"`` the host
    steps, kernels and launch configuration and the CUDA C, rendered without a GPU (``Kernel.stages``)."""
    if isinstance(kernel, str):
        kernel = _compiled(kernel, kwargs.pop("out_format", None))
    stages = kernel.stages(*args, backend=backend, **kwargs)
    parts = list(stages["notes"])
    for notes, source in zip(stages["statement_notes"], stages["source"]):
        parts += notes + [source]
    return "\n".join(parts)
