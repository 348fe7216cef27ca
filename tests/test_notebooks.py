"""Every notebook in notebooks/ runs top to bottom under nbclient (a real Jupyter kernel), its cells' own
asserts against numpy/scipy/scikit-learn/POT pass, and the key results, read back from the kernel after the
run, hold here too: the widgets and plots were produced and the numbers are what the notebook claims."""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"

# per notebook: an expression evaluated in the kernel after the run (a dict of numbers), and checks on it
CHECKS = {
    "tour": ("dict(spmv=float(np.abs(y - y_ref).max()), softmax=float(np.abs(row_sums[nonempty] - 1).max()), "
             "nnz=int(view.stats['nnz']), ref=int(mask[0, 0].sum()), grid=float(view.density_grid.sum()), "
             "csr=int(nbytes['csr']), bsr=int(nbytes['bsr(4,4)']), fastest=advice.recommended, "
             "frac=float(result.copy_fraction), cuda=('__global__' in cuda_plan), "
             "pruned=str(explorer.pruned.format), measured=len(explorer.advice.measured), "
             "err=explorer.relative_error, err_ref=float(np.linalg.norm(W - explorer.pruned.todense()) / "
             "np.linalg.norm(W)))",
             lambda r: (r["spmv"] < 1e-12 and r["softmax"] < 1e-12 and r["nnz"] == r["ref"] == r["grid"]
                        and r["bsr"] > r["csr"] and r["fastest"] in ("csr", "coo", "bitmap") and 0 < r["frac"]
                        and r["cuda"] and r["pruned"] == "nm(2,4)" and r["measured"] == 4
                        and abs(r["err"] - r["err_ref"]) < 1e-12)),
    "attention_masks": ("dict(exact=max(exact.values()), n=len(masks), dens=density, heads=vs.n_heads, "
                        "blocks=blocks.block_stats['nonempty'])",
                        lambda r: (r["exact"] < 1e-4 and r["n"] == 6 and r["heads"] == 2 and r["blocks"] > 0
                                   and all(0 < d < 0.5 for d in r["dens"].values()))),
    "sparse_coding": ("dict(omp=float(np.abs(C.todense() - C_sk).max()), fista=float(np.abs(C1.todense() - C1_sk)"
                      ".max()), nnz=nnz, recovered=float(np.mean(match > 0.9)))",
                      lambda r: (r["omp"] < 1e-8 and r["fista"] < 1e-4 and r["nnz"]["hard"] < r["nnz"]["fista"]
                                 and r["nnz"]["cel0"] < r["nnz"]["fista"] and r["recovered"] > 0.6)),
    "optimal_transport": ("dict(pot=float(np.abs(P - P_pot).max()), sns=float(np.abs(P2 - P).max()), "
                          "it=log['n_iter'], newton=log2['n_newton'], rows=float(np.abs(P.sum(1) - a).sum()))",
                          lambda r: r["pot"] < 1e-6 and r["sns"] < 1e-6 and r["rows"] < 1e-8 and r["newton"] > 0),
    "graph_sparsification": ("dict(lo=float(w.min()), hi=float(w.max()), kept=H.nnz / G.nnz, "
                             "teddy=T.nnz / G.nnz)",
                             lambda r: 0.5 <= r["lo"] and r["hi"] <= 1.5 and r["kept"] < 0.5
                             and abs(r["teddy"] - 0.5) < 0.01),
}


def test_every_notebook_is_tested():
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_and_its_results_hold(name, monkeypatch):
    # the kernel imports this checkout's sparsedsl (its working directory is notebooks/)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    expr, check = CHECKS[name]
    probe = nbformat.v4.new_code_cell(f"import json as _json; print(_json.dumps({expr}))")
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError (with the traceback) on any error
        seconds = time.perf_counter() - start
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream")
    result = json.loads(text.strip().splitlines()[-1])
    assert check(result), result
    outputs = [o for c in nb.cells[:-1] if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = [k for o in outputs for k in o.get("data", {})]
    assert WIDGET in kinds, "a MaskView was displayed"
    if name == "tour":  # the rich reprs: a tensor's spy thumbnail, a kernel's explain
        html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert any("data:image/png;base64," in h and "SparseTensor" in h for h in html)
        assert any("sparsedsl kernel" in h and "loop order" in h for h in html)
    assert "image/png" in kinds, "a plot was drawn"
    # each notebook runs in well under a minute once its kernels are compiled (first run: compiling too)
    assert seconds < 120, seconds
