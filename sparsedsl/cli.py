"""The ``sparsedsl`` command: ``sparsedsl tour`` (compile a few kernels on a sample matrix, check
them against scipy, time them) and ``sparsedsl run FILE.sdsl`` (parse and type-check a file's
kernels and list them; an error is reported as ``file:line:col`` with a non-zero exit)."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources

import numpy as np
import scipy.io
import scipy.sparse as sp


def _median_time(fn, reps=20):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def tour() -> int:
    import sparsedsl as sd

    with resources.files("sparsedsl.data").joinpath("1138_bus.mtx").open("rb") as f:
        a = sp.csr_array(scipy.io.mmread(f))
    a.sum_duplicates()
    n = a.shape[0]
    rng = np.random.default_rng(0)
    x, X = rng.random(n), rng.random((n, 16))
    print(f"sparsedsl {sd.__version__} tour: HB/1138_bus, {n} x {n}, {a.nnz} stored entries\n")
    A = sd.asformat(a, "csr")
    mask = sd.asformat(sp.random(n, n, density=0.01, format="csr", random_state=1), "csr")
    U, V = rng.random((n, 16)), rng.random((n, 16))
    cases = [
        ("SpMV", "y[i] = A[i,j] * x[j]", dict(A=A, x=x), {}, lambda: a @ x),
        ("SpMM (16 cols)", "Y[i,n] = A[i,j] * X[j,n]", dict(A=A, X=X), {}, lambda: a @ X),
        ("SpGEMM A*A", "C[i,j] = A[i,k] * B[k,j]", dict(A=A, B=A), {"out_format": "csr"}, lambda: a @ a),
        ("A + A^T", "C[i,j] = A[i,j] + B[j,i]", dict(A=A, B=A), {"out_format": "csr"}, lambda: a + a.T),
        ("SDDMM", "C[i,j] = M[i,j] * U[i,k] * V[j,k]", dict(M=mask, U=U, V=V), {"out_format": "csr"},
         lambda: mask.to_scipy().multiply(U @ V.T)),
        ("row max", "y[i] = max[j](A[i,j])", dict(A=A), {}, lambda: a.max(axis=1).toarray().ravel()),
    ]
    print(f"{'kernel':16} {'compile+1st':>12} {'sparsedsl':>11} {'scipy':>11} {'ratio':>7}  agrees")
    ok = True
    for title, expr, ops, kw, ref in cases:
        t = time.perf_counter()
        k = sd.compile(expr, **kw)
        out = k(**ops)
        first = time.perf_counter() - t
        got = out.to_numpy() if hasattr(out, "to_numpy") else out
        want = ref()
        want = want.toarray() if hasattr(want, "toarray") else np.asarray(want)
        if title == "row max":  # scipy counts implicit zeros; over stored entries only, as sparsedsl
            want = np.asarray([a.data[a.indptr[r]:a.indptr[r + 1]].max() if a.indptr[r + 1] > a.indptr[r]
                               else -np.inf for r in range(n)])
        agrees = bool(np.allclose(got, want))
        ok &= agrees
        ts, tp = _median_time(lambda k=k, ops=ops: k(**ops)), _median_time(ref)
        print(f"{title:16} {first * 1e3:10.0f}ms {ts * 1e6:9.0f}us {tp * 1e6:9.0f}us {tp / ts:6.2f}x  "
              f"{'yes' if agrees else 'NO'}")
    print("\nratio = scipy time / sparsedsl time (>1: sparsedsl faster). First compile is cached on disk.")
    print("The generated code of any kernel: sparsedsl.explain(kernel, **operands).")
    return 0 if ok else 1


def run_file(path: str) -> int:
    """Parse and type-check every kernel of a .sdsl file (``sparsedsl.load``), then list them."""
    from .compiler import Kernel
    from .lang.formats import Format
    from .loader import load

    for name, obj in vars(load(path)).items():
        if isinstance(obj, Format):
            print(f"format {name} = {obj.spelling()}")
        elif isinstance(obj, Kernel):
            prog = obj.program
            ps = ", ".join(f"{p.name}: {p.format or p.kind}" for p in prog.params)
            outs = ", ".join(f"{p.name}: {p.format or 'dense'}" for p in prog.outputs)
            print(f"kernel {name}({ps}) -> {outs}: {len(prog.statements)} statement(s), checked")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sparsedsl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tour", help="compile a few kernels on a sample matrix, check against scipy, time them")
    r = sub.add_parser("run", help="parse and type-check a .sdsl file and list its formats and kernels")
    r.add_argument("file")
    args = parser.parse_args(argv)
    from .errors import DSLError, FormatError

    try:
        return tour() if args.command == "tour" else run_file(args.file)
    except DSLError as exc:  # its message starts with the problem, then file:line:col and the caret
        where = f"{exc.span.file}:{exc.span.line}:{exc.span.col}: " if exc.span else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return 2
    except FormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing file, a directory, no permission
        print(f"{exc.filename or args.file}: error: cannot read it: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
