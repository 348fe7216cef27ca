"""Benchmark harness for sparsedsl vs. peers: run `python -m benchmarks --help`.

Timings interleave the contenders, so a library's idle worker threads must not go on spinning into
the next contender's timed call. OpenBLAS (numpy's dense products) spins for about 2^28 cycles
after each call, which on a 2-core machine takes a core from whatever runs next (a 10 ms kernel
measured 40 ms right after a dense matmul). Its idle threads are told to sleep at once; this is
set before numpy loads OpenBLAS and does not change how fast OpenBLAS computes.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # 2^4 cycles of spinning, then sleep
