"""Kernels pickle to their program and schedule (never machine code) and are rebuilt in another process."""

import pickle
import subprocess
import sys

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd


@sd.sparse_kernel
def scaled_spmv(A: "csr", x: "dense", alpha: "scalar") -> "dense":
    y[i] = alpha * A[i, j] * x[j]
    return y


def test_a_called_kernel_pickles_and_runs_in_a_fresh_process(tmp_path):
    a = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    x = np.arange(20.0)
    spgemm = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr",
                        schedule={"workspace": "hash"})
    spgemm(A=a, B=a.T.tocsr())
    scaled_spmv(A=a, x=x, alpha=2.0)  # called: its plans hold compiled functions, which do not travel
    path = tmp_path / "kernels.pkl"
    path.write_bytes(pickle.dumps((spgemm, scaled_spmv, a, x)))
    assert len(path.read_bytes()) < 50_000  # a program, not machine code
    script = f"""
import pickle, numpy as np
spgemm, spmv, a, x = pickle.load(open({str(path)!r}, "rb"))
assert spgemm.schedule == {{"workspace": "hash"}}
c = spgemm(A=a, B=a.T.tocsr())
np.testing.assert_allclose(c.to_numpy(), (a @ a.T).toarray())
np.testing.assert_allclose(spmv(A=a, x=x, alpha=2.0), 2.0 * (a @ x))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_unpickled_kernel_equals_the_original_program():
    k = pickle.loads(pickle.dumps(scaled_spmv))
    assert k.program == scaled_spmv.program and k.name == "scaled_spmv"
