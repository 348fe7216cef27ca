#!/usr/bin/env bash
# One lent-GPU session: install the carried wheels, run every GPU test and the GPU benchmarks,
# and leave their output under $OUT.  Usage on the device machine (see README, "GPU"):
#   bash benchmarks/device_session.sh tests      # GPU-marked tests + the files that exercise CUDA
#   bash benchmarks/device_session.sh bench      # benchmarks.gpu (skinny cases) and the stdlib GPU rows
#   bash benchmarks/device_session.sh attention  # the attention GPU tests and benchmark
#   bash benchmarks/device_session.sh full       # the whole benchmarks.gpu table
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
case "${1:-tests}" in
tests)
    timeout "${TESTS_TIMEOUT:-560}" python3 -m pytest -q -n 8 -p no:cacheprovider -rfs \
        tests/test_cuda.py tests/test_cuda_composite.py tests/test_composite.py tests/test_semantics.py \
        tests/test_pickle.py tests/test_wht.py tests/test_sbl.py tests/test_sparse_coding.py tests/test_ot.py \
        tests/test_attention.py tests/test_templates.py tests/test_passes.py tests/test_graph.py tests/test_turbo_vbi.py \
        2>&1 | tail -60 | tee "$OUT/gpu-tests.txt"
    ;;
bench)
    timeout 200 python3 -m benchmarks.gpu --cases skinny --out "$OUT/gpu-skinny.json" 2>&1 | tail -30 | tee "$OUT/gpu-skinny.txt"
    timeout 150 python3 -m benchmarks.stdlib_sbl_wht --gpu-only --out "$OUT/stdlib-sbl-wht-gpu.json" 2>&1 | tail -20 | tee "$OUT/sbl-wht-gpu.txt"
    timeout 200 python3 -m benchmarks.stdlib_graph_ot --quick --gpu --out "$OUT/stdlib-graph-ot-quick-gpu.json" 2>&1 | tail -30 | tee "$OUT/graph-ot-gpu.txt"
    ;;
attention)
    timeout 240 python3 -m benchmarks.stdlib_attention --gpu --out "$OUT/stdlib-attention-gpu.json" 2>&1 \
        | grep -vi warn | tail -40 | tee "$OUT/attention-gpu.txt"
    ;;
full)  # every case but the skinny configuration sweep (2-4 minutes on an H100)
    timeout "${FULL_TIMEOUT:-560}" python3 -m benchmarks.gpu --out "$OUT/gpu-full.json" \
        --cases spmv,spmm,sddmm,spgemm,composite,skinny_nm,skinny_bitmap,compile 2>&1 | tail -40 | tee "$OUT/gpu-full.txt"
    ;;
esac
