"""The template registry: a program template is matched up to renaming, chosen only when its ``fits``
says yes, reported by explain, and the generated code stays the fallback and the oracle."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl import templates
from sparsedsl.testing import assert_equal

SOFTMAX = ("let m[i] = max[j](S[i,j])\n"
           "let e[i,j] = mask(S[i,j], exp(S[i,j] - m[i]))\n"
           "let z[i] = e[i,j]\n"
           "P[i,j] = e[i,j] / z[i]")


def _numpy_softmax(ops):
    """A stand-in for a hand-written kernel: masked row softmax with numpy/scipy."""
    s = ops["S"].to_scipy().tocsr()
    out = s.copy().astype(np.float64)
    for r in range(s.shape[0]):
        lo, hi = s.indptr[r], s.indptr[r + 1]
        if hi > lo:
            e = np.exp(s.data[lo:hi] - s.data[lo:hi].max())
            out.data[lo:hi] = e / e.sum()
    return {"P": sd.asformat(out, "csr")}


@pytest.fixture
def softmax_template():
    calls = []

    def build(match):
        def run(ops):
            calls.append(sorted(ops))
            return _numpy_softmax(ops)
        return run

    t = templates.register(templates.Template(
        "test.row_softmax", "cpu", "program", pattern=SOFTMAX, build=build,
        fits=lambda m: None if m.type("S").format.name == "csr" else f"S is {m.type('S').format.name}, not csr"))
    yield calls
    templates.unregister(t.name)


def _scores(seed=0):
    a = sp.random(40, 30, density=0.2, format="csr", random_state=seed)
    return sd.asformat(a, "csr")


def test_a_program_template_is_matched_up_to_renaming_and_used(softmax_template):
    renamed = SOFTMAX.replace("S[", "Scores[").replace("[i", "[r").replace("i]", "r]").replace("P[", "Out[")
    k = sd.compile(renamed, out_format="csr")
    S = _scores()
    got = k(Scores=S)
    assert softmax_template == [["S"]]  # the template ran, given the operand under the pattern's name
    oracle = sd.Kernel(k.program, {"templates": False})(Scores=S)  # the generated code
    assert_equal(got.to_numpy(), oracle.to_numpy())
    assert "template: test.row_softmax (program)" in sd.explain(k, Scores=S)


def test_fits_says_why_and_the_generated_code_runs(softmax_template):
    k = sd.compile(SOFTMAX, out_format="csr")
    S = sd.asformat(_scores(1).to_scipy(), "dcsr")
    got = k(S=S)
    assert softmax_template == []
    assert "template test.row_softmax not used: S is dcsr, not csr" in sd.explain(k, S=S)
    assert_equal(got.to_numpy(), k.reference(S=S).to_numpy())


@pytest.mark.parametrize("program, reason", [
    ("P[i,j] = S[i,j] * 2", "the program has 1 statements, the pattern 4"),
    (SOFTMAX.replace("exp(", "log("), "exp(...) vs log(...)"),
    (SOFTMAX.replace("max[j]", "min[j]"), "max(...) vs min(...)"),
])
def test_a_different_program_is_rejected_with_the_difference(softmax_template, program, reason):
    k = sd.compile(program, out_format="csr")
    S = _scores(2)
    assert "template test.row_softmax not used: " in sd.explain(k, S=S)
    assert reason in sd.explain(k, S=S)
    assert softmax_template == []


def test_renaming_is_consistent():
    # the pattern uses one tensor twice; a program that uses two different tensors there does not match
    from sparsedsl.lang.check import TensorType, check
    from sparsedsl.lang.formats import dense

    k = sd.compile("C[i,j] = A[i,j] * B[i,j]")
    t = TensorType((3, 3), np.dtype(np.float64), dense(2))
    checked = check(k.program, {"A": t, "B": t})
    assert "stands for both" in templates.match_program("C[i,j] = A[i,j] * A[i,j]", checked)
    names, indices = templates.match_program("Z[a,b] = Y[a,b] * X[a,b]", checked)
    assert names == {"Z": "C", "Y": "A", "X": "B"} and indices == {"a": "i", "b": "j"}
    names, _ = templates.match_program("Z[a,b] = X[a,b] * Y[a,b]", checked)
    assert names["X"] == "A"


def test_a_bad_template_fails_at_registration():
    with pytest.raises(ValueError, match="needs a pattern"):
        templates.Template("t", "cpu", "program", fits=lambda m: None, build=lambda m: None)
    with pytest.raises(sd.DSLError):
        templates.register(templates.Template("t", "cpu", "program", pattern="y[i] = = x[i]",
                                              fits=lambda m: None, build=lambda m: None))
    assert templates.registered(backend="cpu", stage="program") == []
