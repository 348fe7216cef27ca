"""`python -m benchmarks.dask_scale [--nnz N] [--workers W] [--quick] [--out PATH]`: issue 21's benchmark.

SpMV and SpMM (16 columns) on a csr matrix of 20M nonzeros (default), in one run:

- one process: the compiled kernel called on the whole matrix (numba threads on every core, and on
  one thread: the per-core rate each 1-thread worker is compared with);
- W worker processes (distributed.LocalCluster, 1 thread each, numba threads = cores / W): the matrix
  cut into row blocks of equal nonzeros, held on the workers, ``(PA @ x).compute()`` timed whole
  (graph building, sending x, the tasks, gathering y).

Reported: median seconds; speed-up (one process / workers) of the whole call and of the kernels
alone (kernel seconds measured inside each task, ``sparsedsl.dask.worker_stats``); what is not
kernel time (scheduling, sending x or X to the workers, gathering y) in all and per task of the
graph; and the scheduler's overhead per task, from 1,000 empty tasks submitted and gathered.
On one host the W workers share the cores that the single process already uses, so the speed-up
there is bounded by 1; across machines each worker brings its own cores and memory bandwidth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import sparsedsl as sd

from .timing import machine_info, write_json


def random_csr(n: int, per_row: int, seed: int = 0) -> sd.SparseTensor:
    """n x n csr with ``per_row`` distinct random columns per row (sorted), built in O(nnz)."""
    rng = np.random.default_rng(seed)
    cols = np.sort(rng.integers(0, n - per_row + 1, size=(n, per_row), dtype=np.int64), axis=1)
    cols = (cols + np.arange(per_row)).astype(np.int32).reshape(-1)  # strictly increasing per row
    pos = np.arange(0, n * per_row + 1, per_row, dtype=np.int64)
    vals = rng.random(n * per_row)
    return sd.SparseTensor("csr", (n, n), [{}, {"pos": pos, "crd": cols}], vals)


def _median(fn, repeat):
    fn()  # warm: plans made, caches loaded
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def _noop(_):
    return None


def _set_threads(k):
    import numba

    numba.set_num_threads(min(k, numba.config.NUMBA_NUM_THREADS))
    return numba.get_num_threads()


def _distributed(A, x, X, workers, parts, repeat):
    from distributed import Client, LocalCluster

    import sparsedsl.dask as sdd

    threads = max(1, (os.cpu_count() or 1) // workers)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        # numba threads per worker, the host's cores shared out. numba's setting is per thread, so it
        # is made by a task on each worker's one task thread (client.run would set its event loop's)
        client.gather([client.submit(_set_threads, threads, workers=[w], pure=False)
                       for w in client.scheduler_info()["workers"]])
        t = time.perf_counter()
        PA = sdd.partition(A, parts).persist()  # scattered: the blocks live on the workers
        send = time.perf_counter() - t
        out = {"workers": workers, "partitions": PA.npartitions, "numba_threads_per_worker": threads,
               "partition_and_scatter_s": send}
        for name, operand in (("spmv", x), ("spmm16", X)):
            (PA @ operand).compute()  # warm: each worker plans the kernel (disk cache) at its first call
            before = _kernel_seconds(client)
            graph_tasks = len(dict((PA @ operand).__dask_graph__()))
            med, times = _median(lambda operand=operand: (PA @ operand).compute(), repeat)
            kernel = (_kernel_seconds(client) - before) / (repeat + 1) / workers  # per worker per run
            out[name] = {"median_s": med, "times_s": times, "graph_tasks": graph_tasks,
                         "kernel_s_per_worker": kernel, "non_kernel_s": max(0.0, med - kernel),
                         "non_kernel_per_task_s": max(0.0, med - kernel) / graph_tasks}
            check = np.asarray((PA @ operand).compute())
            out[name]["max_abs_diff_vs_one_process"] = float(np.abs(check - (A @ operand)).max())
        t = time.perf_counter()
        client.gather(client.map(_noop, range(1000), pure=False))
        out["empty_task_round_trip_s"] = (time.perf_counter() - t) / 1000
        out["worker_stats"] = {k: v["counts"] for k, v in client.run(sdd.worker_stats).items()}
        return out
    finally:
        client.close()
        cluster.close()


def _kernel_seconds(client) -> float:
    import sparsedsl.dask as sdd

    return sum(sum(sum(v) for v in s["seconds"].values()) for s in client.run(sdd.worker_stats).values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nnz", type=int, default=20_000_000)
    ap.add_argument("--per-row", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--parts", type=int, default=None, help="row blocks (default: one per worker)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="200k nonzeros, 3 repeats: checks the script runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.nnz, args.repeat = 200_000, 3
    n = args.nnz // args.per_row
    A = random_csr(n, args.per_row)
    rng = np.random.default_rng(1)
    x, X = rng.random(n), rng.random((n, 16))
    spmv, spmm = sd.compile("y[i] = A[i,j] * x[j]", name="spmv"), sd.compile("Y[i,k] = A[i,j] * X[j,k]", name="spmm")
    one = {"spmv": _median(lambda: spmv(A=A, x=x), args.repeat)[0],
           "spmm16": _median(lambda: spmm(A=A, X=X), args.repeat)[0]}
    import numba

    cores = numba.get_num_threads()
    numba.set_num_threads(1)  # the per-core rate: what each 1-thread worker is measured against
    one_thread = {"spmv": _median(lambda: spmv(A=A, x=x), args.repeat)[0],
                  "spmm16": _median(lambda: spmm(A=A, X=X), args.repeat)[0]}
    numba.set_num_threads(cores)
    dist = _distributed(A, x, X, args.workers, args.parts or args.workers, args.repeat)
    result = {"machine": machine_info({"dask": _version("dask"), "distributed": _version("distributed")}),
              "quick": args.quick, "nnz": A.nnz, "shape": A.shape, "one_process_s": one,
              "one_process_numba_threads": cores, "one_process_1_thread_s": one_thread, "distributed": dist,
              "speedup": {k: one[k] / dist[k]["median_s"] for k in one},
              "speedup_vs_1_thread": {k: one_thread[k] / dist[k]["median_s"] for k in one},
              "kernel_only_speedup": {k: one[k] / dist[k]["kernel_s_per_worker"] for k in one}}
    for k in one:
        d = dist[k]
        print(f"{k:7s} one process {one[k] * 1e3:9.2f} ms ({one_thread[k] * 1e3:.2f} ms on 1 thread) | "
              f"{args.workers} workers {d['median_s'] * 1e3:9.2f} ms "
              f"(kernels {d['kernel_s_per_worker'] * 1e3:.2f} ms per worker, the rest {d['non_kernel_s'] * 1e3:.2f} ms"
              f" = {d['non_kernel_per_task_s'] * 1e3:.2f} ms per task of {d['graph_tasks']}) | speed-up "
              f"{result['speedup'][k]:.2f}x, kernels alone {result['kernel_only_speedup'][k]:.2f}x")
    print(f"scheduler overhead per task (1,000 empty tasks): {dist['empty_task_round_trip_s'] * 1e3:.2f} ms")
    out = args.out or os.path.join("benchmarks", "results", f"dask-scale{'-quick' if args.quick else ''}.json")
    write_json(out, result)
    print("wrote", out)


def _version(pkg):
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
