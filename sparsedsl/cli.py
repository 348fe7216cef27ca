"""The sparsedsl command.

  sparsedsl                  the REPL (formats, kernels, :let/:run/:show/:bench/:advise/:spy; :help)
  sparsedsl run FILE.sdsl    run a script: declarations, then let/run/print statements; an error is
                             reported as file:line:col with exit status 2
  sparsedsl tour             compile a few kernels on a sample matrix, check them against scipy, time them
  sparsedsl bench [--quick]  the benchmark suite (python -m benchmarks)
  sparsedsl --version"""

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
    """Run a .sdsl script: its declarations (type-checked), then its let/run/print statements; a file of
    declarations only lists them. An error prints ``file:line:col: error: ...`` and returns 2."""
    from .repl import run_script

    return run_script(path)


def bench_suite(args: list[str]) -> int:
    """The benchmark suite (``python -m benchmarks``), which ships with the source checkout."""
    try:
        from benchmarks.__main__ import main as suite
    except ImportError:
        print("error: the benchmark suite is in the source checkout (benchmarks/); run `sparsedsl bench` "
              "from the repository root", file=sys.stderr)
        return 2
    return suite(args) or 0


def main(argv=None) -> int:
    import sparsedsl

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after it is the suite's own (its --help too)
        return bench_suite(argv[1:])
    parser = argparse.ArgumentParser(prog="sparsedsl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sparsedsl {sparsedsl.__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("tour", help="compile a few kernels on a sample matrix, check against scipy, time them")
    r = sub.add_parser("run", help="run a .sdsl script (declarations, then let/run/print statements)")
    r.add_argument("file")
    sub.add_parser("bench", help="the benchmark suite (python -m benchmarks; its options follow)")
    args = parser.parse_args(argv)
    if args.command is None:
        from .repl import repl

        return repl()
    if args.command == "tour":
        return tour()
    return run_file(args.file)


if __name__ == "__main__":
    sys.exit(main())
