"""The three front ends (.sdsl text, @sparse_kernel Python, the one-liner) build the same AST.

Spans differ between front ends, so statements are compared with ``shape_of`` (span-free). The
``is_let`` flag of the output statement may differ between front ends, so target and value are
compared separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl
from sparsedsl import sparse_kernel
from sparsedsl.lang.ast import shape_of
from sparsedsl.lang.syntax import parse_source, parse_statements

# ---- the Python versions of the programs ---------------------------------------------------------
# (names inside bodies are index notation, not Python variables)
# ruff: noqa: F821


def py_spmv(A: csr, x: dense) -> dense:
    y[i] = A[i, j] * x[j]
    return y


def py_sddmm(S: csr, U: dense, V: dense) -> csr:
    C[i, j] = S[i, j] * U[i, k] * V[k, j]
    return C


def py_rowmax(A: csr) -> dense:
    m[i] = max[j](A[i, j])
    return m


def py_semiring(A: csr, B: csr) -> dense:
    C[i, j] = min_plus[k](A[i, k] * B[k, j])
    return C


def py_calls(A: csr, x: dense) -> dense:
    y[i] = exp(A[i, j]) * where(x[j] > 0, x[j], -x[j])
    return y


def py_compare(A: csr, B: csr) -> dense:
    C[i, j] = (A[i, j] <= B[i, j]) + (A[i, j] != 2) * (A[i, j] >= 0.5)
    return C


def py_unary(A: csr, x: dense) -> dense:
    y[i] = -A[i, j] * -x[j] - -3
    return y


def py_scalar(A: csr, x: dense, alpha: scalar) -> dense:
    y[i] = alpha * A[i, j] * x[j] + 2.5 / alpha
    return y


def py_literals(A: csr) -> dense:
    B[i, j] = A[i, j] * 2 + 1.5 - 0.25 * A[i, j] / 4
    return B


def py_nested(A: csr, x: dense) -> dense:
    y[i] = sum[j](A[i, j] * exp(x[j] - max[k](A[k, j])))
    return y


def py_two_statements(A: csr, x: dense) -> dense:
    t[i] = A[i, j] * x[j]
    y[i] = relu(t[i]) + sigmoid(t[i])
    return y


# name -> (sdsl params, sdsl output, body text, python fn, one-liner body)
PROGRAMS = {
    "spmv": ("A: csr, x: dense", "y: dense", "y[i] = A[i,j] * x[j]", py_spmv),
    "sddmm": ("S: csr, U: dense, V: dense", "C: csr", "C[i,j] = S[i,j] * U[i,k] * V[k,j]", py_sddmm),
    "rowmax": ("A: csr", "m: dense", "m[i] = max[j](A[i,j])", py_rowmax),
    "semiring": ("A: csr, B: csr", "C: dense", "C[i,j] = min_plus[k](A[i,k] * B[k,j])", py_semiring),
    "calls": ("A: csr, x: dense", "y: dense", "y[i] = exp(A[i,j]) * where(x[j] > 0, x[j], -x[j])", py_calls),
    "compare": ("A: csr, B: csr", "C: dense",
                "C[i,j] = (A[i,j] <= B[i,j]) + (A[i,j] != 2) * (A[i,j] >= 0.5)", py_compare),
    "unary": ("A: csr, x: dense", "y: dense", "y[i] = -A[i,j] * -x[j] - -3", py_unary),
    "scalar": ("A: csr, x: dense, alpha: scalar", "y: dense", "y[i] = alpha * A[i,j] * x[j] + 2.5 / alpha",
               py_scalar),
    "literals": ("A: csr", "B: dense", "B[i,j] = A[i,j] * 2 + 1.5 - 0.25 * A[i,j] / 4", py_literals),
    "nested": ("A: csr, x: dense", "y: dense", "y[i] = sum[j](A[i,j] * exp(x[j] - max[k](A[k,j])))", py_nested),
    "two_statements": ("A: csr, x: dense", "y: dense", "let t[i] = A[i,j] * x[j]\n  y[i] = relu(t[i]) + sigmoid(t[i])",
                       py_two_statements),
}


def _sdsl(name):
    params, out, body, _ = PROGRAMS[name]
    return f"kernel k({params}) -> {out} {{\n  {body}\n}}\n"


def _key(st):
    return shape_of(st.target), shape_of(st.value)


def _keys(stmts):
    return [_key(s) for s in stmts]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_text_python_and_one_liner_give_the_same_statements(name):
    params, out, body, fn = PROGRAMS[name]
    text = parse_source(_sdsl(name))["kernels"]["k"].statements
    python = sparse_kernel(fn).program.statements
    one_liner = parse_statements(body.replace("let ", "").replace("\n  ", "; "))
    assert len(text) == len(python) == len(one_liner)
    assert _keys(text) == _keys(python)
    assert _keys(text) == _keys(one_liner)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_text_and_python_give_the_same_params_and_outputs(name):
    text = parse_source(_sdsl(name))["kernels"]["k"]
    python = sparse_kernel(PROGRAMS[name][3]).program
    assert [(p.name, p.kind, p.format) for p in text.params] == [(p.name, p.kind, p.format) for p in python.params]
    assert [(p.name, p.kind, p.format) for p in text.outputs] == [(p.name, p.kind, p.format) for p in python.outputs]


def test_let_flags_of_temporaries_agree():
    text = parse_source(_sdsl("two_statements"))["kernels"]["k"].statements
    python = sparse_kernel(py_two_statements).program.statements
    assert [s.is_let for s in text] == [True, False]
    assert [s.is_let for s in python] == [True, False]


def test_shape_of_ignores_spans_but_not_structure():
    a = parse_statements("y[i] = A[i,j] * x[j]")[0]
    b = parse_statements("\n\n   y[i]   =   A[i, j]*x[j]", file="other")[0]
    c = parse_statements("y[i] = A[i,j] + x[j]")[0]
    d = parse_statements("y[i] = A[i,k] * x[k]")[0]
    assert a.span != b.span
    assert shape_of(a) == shape_of(b)
    assert shape_of(a) != shape_of(c)
    assert shape_of(a) != shape_of(d)


def test_literal_and_scalar_node_kinds():
    (st,) = parse_statements("y[i] = A[i,j] * 2 + 1.5 * alpha + true")
    kinds = {type(n).__name__ for n in _walk(st.value)}
    assert {"Literal", "Scalar", "Access", "BinOp"} <= kinds
    lits = [n.value for n in _walk(st.value) if type(n).__name__ == "Literal"]
    assert lits == [2, 1.5, True]
    assert isinstance(lits[0], int) and isinstance(lits[1], float) and isinstance(lits[2], bool)


def _walk(node):
    from sparsedsl.lang.ast import walk

    return list(walk(node))


# ---- the same numbers --------------------------------------------------------------------------


@pytest.fixture
def spmv_operands():
    A = sparsedsl.asformat(sp.random(13, 9, density=0.3, format="csr", random_state=3), "csr")
    x = np.random.default_rng(1).standard_normal(9)
    return A, x


def test_three_front_ends_compute_the_same_spmv(spmv_operands):
    A, x = spmv_operands
    expected = A.to_numpy() @ x
    k_text = sparsedsl.Kernel(parse_source(_sdsl("spmv"))["kernels"]["k"])
    k_py = sparse_kernel(py_spmv)
    k_one = sparsedsl.compile("y[i] = A[i,j] * x[j]", A="csr", x="dense")
    results = []
    for k in (k_text, k_py, k_one):
        got = np.asarray(k(A=A, x=x))
        ref = np.asarray(k.reference(A=A, x=x))
        np.testing.assert_allclose(ref, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        results.append(got)
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=0)
    np.testing.assert_allclose(results[0], results[2], rtol=0, atol=0)
    np.testing.assert_allclose(
        sparsedsl.compute("y[i] = A[i,j] * x[j]", A=A, x=x), expected, rtol=1e-12, atol=1e-12)


def test_three_front_ends_compute_the_same_scaled_spmv(spmv_operands):
    A, x = spmv_operands
    # the constant term sits under the implicit sum over j; compare the front ends with each other
    expected = None
    k_text = sparsedsl.Kernel(parse_source(_sdsl("scalar"))["kernels"]["k"])
    k_py = sparse_kernel(py_scalar)
    k_one = sparsedsl.compile("y[i] = alpha * A[i,j] * x[j] + 2.5 / alpha", A="csr")
    for k in (k_text, k_py, k_one):
        ref = np.asarray(k.reference(A=A, x=x, alpha=1.5))
        expected = ref if expected is None else expected
        np.testing.assert_allclose(ref, expected, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(k(A=A, x=x, alpha=1.5)), ref, rtol=1e-12)


def test_compiled_union_with_constant_matches_reference_small():
    D = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    x = np.array([10.0, 20.0, 30.0])
    k = sparsedsl.compile("y[i] = A[i,j] * x[j] + 1", A="csr")
    A = sparsedsl.asformat(D, "csr")
    # the implicit sum wraps the product only (TACO's rule): A·x + 1, not Σj (A[i,j]·x[j] + 1)
    np.testing.assert_allclose(k.reference(A=A, x=x), [11.0, 61.0])
    np.testing.assert_allclose(k(A=A, x=x), [11.0, 61.0])


def test_compute_keeps_its_kernel_and_calls_take_the_fast_path():
    from sparsedsl import compiler

    a = sparsedsl.asformat(np.eye(4), "csr")
    x = np.arange(4.0)
    expr = "y[i] = A[i,j] * x[j] + 0 * x[i]"  # an expression no other test compiles
    np.testing.assert_allclose(sparsedsl.compute(expr, A=a, x=x), x)
    before = compiler._compiled.cache_info()
    np.testing.assert_allclose(sparsedsl.compute(expr, A=a, x=x), x)
    assert compiler._compiled.cache_info().hits == before.hits + 1
    kernel = compiler._compiled(expr, None)
    ready = kernel._bind_ready((), {"A": a, "x": x})
    assert ready is not None and ready[1] in kernel._plans  # numpy and CSR operands skip binding
    assert "loop order" in sparsedsl.explain(expr, A=a, x=x)


def test_stages_name_each_pipeline_output():
    from sparsedsl.lang import loopir
    from sparsedsl.lang.check import Checked

    a = sparsedsl.asformat(sp.random(6, 5, density=0.4, format="csr", random_state=0), "csr")
    k = sparsedsl.compile("y[i] = max[j](A[i,j]) + x[i]", A="csr")
    stages = k.stages(A=a, x=np.ones(6))
    assert stages["parsed"] is k.program
    assert isinstance(stages["checked"], Checked) and isinstance(stages["rewritten"], Checked)
    # the nested max is hoisted into a temporary: two statements, each with loop IR and source
    assert len(stages["rewritten"].statements) == 2 == len(stages["loop_ir"]) == len(stages["source"])
    assert all(isinstance(f, loopir.Function) and loopir.dump(loopir.Module([f], f.name)) for f in stages["loop_ir"])
    assert all("def stmt" in src for src in stages["source"])
    assert any("loop order" in n for notes in stages["statement_notes"] for n in notes)
    assert sparsedsl.explain(k, A=a, x=np.ones(6)).count("def stmt") == 2
