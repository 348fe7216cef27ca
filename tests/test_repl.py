"""The ``sparsedsl`` command: the REPL under a pseudo-terminal (pexpect), its session statements
in-process, ``sparsedsl run`` on scripts and the examples, and the pygments lexer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from prompt_toolkit.document import Document

import sparsedsl as sd
from sparsedsl import cli
from sparsedsl.errors import DSLError
from sparsedsl.repl import Session, SparseDSLLexer
from sparsedsl.repl.app import SessionCompleter
from sparsedsl.repl.source import is_complete, split_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.sdsl"))
SPMV = "kernel spmv(A: csr, x: dense) -> y: dense {\n    y[i] = A[i,j] * x[j]\n}\n"


def session():
    lines = []
    s = Session(out=lines.append)
    return s, lines


# ---- the REPL in a pseudo-terminal -----------------------------------------------------------------

pexpect = pytest.importorskip("pexpect")
TIMEOUT = 60  # generous: the shared test machine has 2 cores and other jobs


def spawn(tmp_path, term="dumb"):
    env = dict(os.environ, TERM=term, PROMPT_TOOLKIT_NO_CPR="1", SPARSEDSL_HISTORY=str(tmp_path / "history"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = pexpect.spawn(sys.executable, ["-m", "sparsedsl.cli"], env=env, encoding="utf-8", timeout=TIMEOUT,
                          cwd=str(tmp_path), dimensions=(40, 200))
    child.expect("sdsl> " if term == "dumb" else "sdsl>")  # xterm: the prompt's space may be a cursor move
    return child


def line(child, text, expect="sdsl> "):
    """Type a line once the prompt is ready (keys typed before it reaches raw mode are read by the tty
    in cooked mode, where Ctrl-D means end of file), and wait for the next prompt."""
    time.sleep(0.2)
    child.send(text + "\r")
    child.expect(expect)
    return child.before


def ctrl_d(child):
    time.sleep(0.3)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_repl_defines_loads_runs_reports_a_typo_and_quits_with_ctrl_d(tmp_path):
    m = sp.random(30, 30, density=0.2, format="coo", random_state=0)
    scipy.io.mmwrite(str(tmp_path / "m.mtx"), m)
    child = spawn(tmp_path)
    out = line(child, "format blk = (i, j) -> (i / 2: dense, j / 2: compressed, i % 2: dense, j % 2: dense)")
    assert "format blk = (i, j) -> (i / 2: dense" in out
    # a kernel over several lines: Enter inside the open '{' continues the input
    time.sleep(0.2)
    child.send("kernel rowsum(A: csr, x: dense) -> y: dense {\r")
    child.send("y[i] = A[i,j] * x[j]\r")
    child.send("}\r")
    child.expect("sdsl> ")
    assert "<sparsedsl kernel rowsum(A: csr, x: dense) -> y: dense>" in child.before
    out = line(child, ":let A = load m.mtx")
    assert "A = csr 30x30 float64, nnz 180" in out
    line(child, ":let x = ones 30")
    out = line(child, ":run rowsum(A, x)")
    first = m.tocsr() @ np.ones(30)
    assert "rowsum(A, x) -> dense 30 float64" in out and f"{first[0]:.5g}"[:5] in out
    out = line(child, ":run rowsum(A, xx)")  # a typo: located error, the session goes on
    assert "error: unknown tensor 'xx'; did you mean 'x'?" in out and "In[6]:1:16" in out
    assert re.search(r"\n\s*\^\^", out), out  # the caret under the column
    out = line(child, "kernel bad(A: csr) -> y: dense { y[i] = A[i,j] * nope(A[i,j]) }")
    assert "error: unknown function 'nope'" in out and "In[7]:1:" in out
    out = line(child, ":let y = rowsum(A, x)")
    assert "y = dense 30 float64" in out
    assert ctrl_d(child) == 0


def test_repl_tab_completion_bench_advise_and_quit(tmp_path):
    child = spawn(tmp_path)
    time.sleep(0.2)
    child.send(SPMV.replace("\n", "\r"))
    child.expect("sdsl> ")
    line(child, ":let A = random csr 300x300 density 0.02 seed 1")
    line(child, ":let x = ones 300")
    time.sleep(0.2)
    child.send(":run spm\t")
    child.expect("v")  # the dumb terminal echoes the last character the completion inserted
    time.sleep(0.3)
    child.send("(A, x)\r")
    child.expect("sdsl> ")
    assert "spmv(A, x) -> dense 300 float64" in child.before
    out = line(child, ":bench spmv(A, x) --repeat 3")
    assert "bench spmv on cpu" in out and "of copy" in out and "scipy A @ x" in out and "flops" in out
    out = line(child, ":advise spmv(A, x) --formats coo,csc")
    assert "advise spmv: A 300x300" in out and "recommended: " in out
    assert re.search(r"coo\s+\d", out) and re.search(r"csc\s+\d", out)
    time.sleep(0.2)
    child.send(":quit\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_repl_history_persists_between_sessions(tmp_path):
    child = spawn(tmp_path)
    line(child, ":let z = ones 7")
    assert ctrl_d(child) == 0
    assert ":let z = ones 7" in (tmp_path / "history").read_text()
    child = spawn(tmp_path)
    time.sleep(0.3)
    child.send("\x1b[A")  # Up: the last session's input comes back
    time.sleep(0.3)
    child.send("\r")
    child.expect("sdsl> ")
    assert "z = dense 7 float64" in child.before
    assert ctrl_d(child) == 0


def test_repl_xterm_mode_highlights_as_you_type(tmp_path):
    child = spawn(tmp_path, term="xterm")
    time.sleep(0.3)
    child.send("kernel")
    child.expect(r"\x1b\[[0-9;]*m\s*kernel")  # the keyword drawn in its pygments style
    time.sleep(0.2)
    child.sendcontrol("c")  # drops the input
    child.expect("sdsl>")
    time.sleep(0.2)
    child.send(":formats\r")
    child.expect("blocked_bitmap")
    child.expect("sdsl>")
    assert ctrl_d(child) == 0


# ---- the session, in-process -------------------------------------------------------------------------

def test_statements_and_values():
    s, out = session()
    s.run(SPMV + "let A = random csr 50x40 density 0.1 seed 2\nlet x = ones 40\nlet y = spmv(A, x)\n", "t.sdsl")
    A = s.tensors["A"]
    assert A.shape == (50, 40) and A.nnz == 200 and A.format.name == "csr"
    np.testing.assert_allclose(s.tensors["y"], A.to_scipy() @ np.ones(40))
    s.run("let B = A as coo\nlet D = A as dense\nlet r = range 5\nlet E = eye 4 csc\nlet Z = zeros 3x3 dcsr", "t2")
    assert s.tensors["B"].format.name == "coo" and isinstance(s.tensors["D"], np.ndarray)
    np.testing.assert_array_equal(s.tensors["r"], np.arange(5.0))
    assert s.tensors["E"].format.name == "csc" and s.tensors["E"].nnz == 4 and s.tensors["Z"].nnz == 0
    s.run("run spmv(A, x)\nprint A\nwho\nformats\nhelp let\nspy A 20x10", "t3")
    text = "\n".join(out)
    assert "spmv(A, x) -> dense 50 float64" in text and "kept as ans" in text
    assert "csr 50x40 float64, nnz 200" in text and ":let NAME = random FMT SHAPE" in text
    assert "50 x 40, 200 stored" in text and "blocked_bitmap(4,4)" in text


def test_index_notation_over_session_tensors():
    s, out = session()
    s.run("let A = random csr 30x20 density 0.2 seed 4\nlet x = range 20\ny[i] = A[i,j] * x[j]\n"
          "let B = random csr 20x30 density 0.2 seed 5\nC[i,j] = A[i,k] * B[k,j] --out csr", "t")
    a, b = s.tensors["A"].to_scipy(), s.tensors["B"].to_scipy()
    np.testing.assert_allclose(s.tensors["y"], a @ np.arange(20.0))
    assert s.tensors["C"].format.name == "csr"
    np.testing.assert_allclose(s.tensors["C"].to_numpy(), (a @ b).toarray())
    with pytest.raises(DSLError) as e:
        s.run("  z[i] = A[i,j] * q[j]", "In[9]")
    assert e.value.message.startswith("unknown tensor 'q'") and e.value.span.col == 19
    with pytest.raises(DSLError, match="a tensor is defined with :let z = ..."):
        s.run("z = 3", "In[10]")


def test_prune_and_nm_product_match_numpy():
    s, _ = session()
    s.run("kernel lin(W: nm(2,4), X: dense) -> Y: dense {\n  Y[i,n] = W[i,k] * X[k,n]\n}\n"
          "let Wd = random dense 16x32 seed 0\nlet W = prune Wd nm(2,4)\nlet X = random dense 32x3 seed 1\n"
          "let Y = lin(W, X)", "nm")
    Wd = s.tensors["Wd"]
    keep = np.argsort(-np.abs(Wd.reshape(16, 8, 4)), axis=2)[:, :, :2]
    mask = np.zeros((16, 8, 4), bool)
    np.put_along_axis(mask, keep, True, axis=2)
    np.testing.assert_allclose(s.tensors["Y"], (Wd * mask.reshape(16, 32)) @ s.tensors["X"])


def test_session_formats_are_visible_to_later_inputs_with_lines_kept():
    s, _ = session()
    s.run("format blk = (i, j) -> (i / 2: dense, j / 2: compressed, i % 2: dense, j % 2: dense)", "In[1]")
    s.run("kernel k(A: blk, x: dense) -> y: dense {\n  y[i] = A[i,j] * x[j]\n}", "In[2]")
    assert s.kernels["k"].program.params[0].format == s.formats["blk"]
    with pytest.raises(DSLError) as e:
        s.run("kernel k2(A: blk) -> y: dense {\n  y[i] = A[i,j] * oops(A[i,j])\n}", "In[3]")
    err = s.relocate(e.value)
    assert (err.span.file, err.span.line, err.span.col) == ("In[3]", 2, 19), err.span
    s.run("format blk = (i, j) -> (j: dense, i: compressed)", "In[4]")  # a format may be declared again
    assert s.formats["blk"] == sd.as_format("csc")


@pytest.mark.parametrize("text, message, col", [
    (":let A = random cssr 10x10", "unknown format 'cssr'", 17),
    (":let A = random csr 10y10", "expected a shape such as 1000x1000", 21),
    (":run nothere(A)", "unknown kernel 'nothere'", 6),
    (":let A = load /etc/passwd", "load reads Matrix Market (.mtx, .mtx.gz) and .npz files", 15),
    (":load /etc/passwd", ":load runs a .sdsl script", 1),
    ("__import__('os').system('true')", "unknown kernel '__import__'", 1),  # no Python: only the language
    ("open('/etc/passwd')", "unknown kernel 'open'", 1),
    (":show checkd spmv", "unknown stage 'checkd'; did you mean 'checked'?", 7),
    (":let A = random csr 10x10 densty 0.1", "unknown option 'densty'", 27),
    (":let A = random nm(2,4) 8x8 density 0.9 seed 0", "holds more than 2 entries", 10),
    (":run spmv(A, x, x)", "spmv(A, x) takes 2 operands; this is one more", 17),
    (":run spmv(A)", "no operand for 'x': spmv(A, x)", 12),
    (":run spmv(A, x) --backend tpu", "the backend is cpu or cuda, got 'tpu'", 27),
    (":let W = random csr 8x8 density 0.9 seed 0\nkernel lin(W: nm(2,4), x: dense) -> y: dense {\n"
     "  y[i] = W[i,k] * x[k]\n}\n:let x8 = ones 8\n:run lin(W, x8)", "lin: operand 'W': nm(2,4)", 6),
    (":run spmv(A, q=x)", "no operand 'q': spmv(A, x)", 14),
    ("kernel spmv(A: csr) -> A2: dense {\n  A2[i] = A[i,j]\n}\nformat A = (i) -> (i: dense)",
     "'A' is already a tensor", 8),
])
def test_bad_statements_are_located_errors(text, message, col):
    s, _ = session()
    s.run(SPMV + "let A = random csr 6x6 density 0.3 seed 0\nlet x = ones 6", "In[1]")
    with pytest.raises(DSLError) as e:
        s.run(text, "In[2]")
    err = s.relocate(e.value)
    assert message in err.message and err.span.col == col, (err.message, err.span)
    assert err.span.line == text.count("\n") + 1  # the last line of the input
    assert "^" in err.span.render()


def test_matrix_market_round_trips_through_let_and_save(tmp_path):
    rng = np.random.default_rng(0)
    digits = sp.random(12, 12, density=0.3, format="coo", random_state=2)
    digits.data = digits.data * 1e-7 + 3  # values that need all 17 significant digits
    sym = sp.random(20, 20, density=0.1, format="csr", random_state=3)
    cases = [(sp.random(40, 25, density=0.1, format="coo", random_state=1), {}), (digits, {}),
             (sp.coo_array((rng.integers(-5, 5, 9).astype(float), (np.arange(9), np.arange(9)))), {}),
             (sym + sym.T, {"symmetry": "symmetric"})]
    for k, (m, how) in enumerate(cases):
        src, dst = tmp_path / f"in{k}.mtx", tmp_path / f"out{k}.mtx"
        scipy.io.mmwrite(str(src), m, **how)
        s, _ = session()
        s.run(f'let A = load "{src}"\nsave A {dst}', "rt", str(tmp_path))
        back = scipy.io.mmread(str(dst))
        assert back.shape == m.shape
        assert abs(sp.csr_array(back) - sp.csr_array(m)).max() == 0  # exactly: every digit written
    s, _ = session()
    s.run("let A = load in0.mtx\nsave A a.npz\nlet B = load a.npz", "npz", str(tmp_path))
    assert s.tensors["B"].format == s.tensors["A"].format
    np.testing.assert_array_equal(s.tensors["B"].to_numpy(), s.tensors["A"].to_numpy())


def test_save_session_as_a_script_and_load_it_back(tmp_path):
    scipy.io.mmwrite(str(tmp_path / "m.mtx"), sp.random(10, 10, density=0.3, random_state=0))
    s, _ = session()
    s.run("format blk = (i, j) -> (i / 2: dense, j / 2: compressed, i % 2: dense, j % 2: dense)", "In[1]")
    s.run(SPMV, "In[2]")
    s.run("let A = load m.mtx\nlet x = ones 10\nsave sess.sdsl", "In[3]", str(tmp_path))
    t, _ = session()
    t.run(f"load {tmp_path / 'sess.sdsl'}\nlet y = spmv(A, x)", "In[1]")
    assert set(t.formats) == {"blk"} and set(t.kernels) == {"spmv"}
    np.testing.assert_allclose(t.tensors["y"], s.tensors["A"].to_scipy() @ np.ones(10))


def test_show_stages():
    s, out = session()
    s.run(SPMV + "let A = random csr 8x8 density 0.3 seed 0\nlet x = ones 8\n"
          "show parsed spmv\nshow checked spmv(A, x)\nshow rewritten spmv\nshow loops spmv\nshow code spmv\n"
          "show cuda spmv", "t")
    text = "\n".join(out)
    assert "y[i] = sum[j](A[i,j] * x[j])" in text  # checked: where the implicit sum binds
    assert "A        input     csr 8x8 float64" in text
    assert "for parallel" in text and "def stmt0" in text
    assert "__global__" in text or "no CUDA source: " in text  # rendered, or why not (an older build)


@pytest.mark.parametrize("keys, text", [
    ("kernel k(A: csr) -> y: dense {\ry[i] = A[i,j]\r}\r", "kernel k(A: csr) -> y: dense {\n    y[i] = A[i,j]\n}"),
    (":let x = ones 3\r", ":let x = ones 3"),
    ("kernel k(A: csr\x1b\r", "kernel k(A: csr"),  # Esc Enter runs it as it is
])
def test_enter_continues_an_open_input_and_runs_a_complete_one(keys, text):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from sparsedsl.repl.app import key_bindings

    with create_pipe_input() as inp:
        inp.send_text(keys)
        prompt = PromptSession(multiline=True, key_bindings=key_bindings(), input=inp, output=DummyOutput())
        assert prompt.prompt() == text


def test_input_completeness():
    assert not is_complete("kernel k(A: csr) -> y: dense {")
    assert not is_complete("kernel k(A: csr) -> y: dense")  # the body is still to come
    assert not is_complete("kernel k(A: csr) -> y: dense {\n  y[i] = A[i,j] *")
    assert is_complete("kernel k(A: csr) -> y: dense {\n  y[i] = A[i,j]\n}")
    assert is_complete(":let A = random csr 10x10") and is_complete("format f = (i, j) -> (i: dense, j: dense)")
    assert is_complete("}")  # an unbalanced close runs, and the parser says where
    assert not is_complete("kernel k(A: csr) -> y: dense { # { in a comment does not count }")


def test_split_source_keeps_lines():
    decl, stmts = split_source("# c\nkernel k(A: csr) -> y: dense {\n  y[i] = A[i,j]\n}\nlet x = ones 3\nrun k(x)\n")
    assert decl.split("\n")[1].startswith("kernel") and decl.split("\n")[4] == ""
    assert stmts == [(5, "let x = ones 3"), (6, "run k(x)")]


def test_completion():
    s, _ = session()
    s.run(SPMV + "format blk = (i, j) -> (i: dense, j: compressed)\nlet Amat = random csr 5x5", "t")
    comp = SessionCompleter(s)

    def complete(text):
        return [c.text for c in comp.get_completions(Document(text, len(text)), None)]

    assert complete(":run sp") == ["spmv"]
    assert "Amat" in complete(":run spmv(Am")
    assert complete(":sh") == [":show"] and ":spy" in complete(":s")
    assert set(complete(":show ")) >= {"checked", "loops", "cuda"}
    assert "blk" in complete("kernel k2(A: b") and "bsr" in complete("kernel k2(A: b")
    assert "csr" in complete(":let B = random c") and "random" in complete(":let B = ra")
    assert "float32" in complete(":let B = random csr 3x3 dtype f")


def test_lexer_tokens():
    from pygments.token import Keyword, Name, Number

    src = "kernel k(A: csr) -> y: dense {\n  y[i] = max[j](exp(A[i,j]) * 2.5)  # c\n}\n:let A = random csr 5x5\n"
    toks = [(t, v) for t, v in SparseDSLLexer().get_tokens(src) if v.strip()]
    assert (Keyword, "kernel") in toks and (Name.Class, "csr") in toks and (Name.Builtin, "max") in toks
    assert (Name.Function.Magic, "exp") in toks and (Number.Float, "2.5") in toks
    assert (Keyword.Pseudo, "let") in toks and (Number.Integer, "5x5") in toks
    assert all(t is not __import__("pygments").token.Error for t, _ in toks)


# ---- sparsedsl run -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_run(path, capsys):
    assert len(EXAMPLES) >= 4
    rc = cli.main(["run", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "", err
    assert "Traceback" not in out


def test_example_results_are_right(capsys):
    cli.main(["run", str(ROOT / "examples" / "shortest_path.sdsl")])
    out = capsys.readouterr().out
    s, _ = session()
    s.run((ROOT / "examples" / "shortest_path.sdsl").read_text(), "sp", str(ROOT / "examples"))
    W = s.tensors["W"].to_scipy()
    from scipy.sparse.csgraph import shortest_path

    want = shortest_path(W, directed=True, indices=0)
    got = s.tensors["d8"]
    reached8 = np.isfinite(got)
    assert np.all(got[reached8] >= want[reached8] - 1e-12)  # 8 rounds: paths of at most 8 edges
    for k in range(8, 200):
        s.run(f"let d{k + 1} = relax(d{k}, W)", "more")
    np.testing.assert_allclose(s.tensors["d200"], want)  # Bellman-Ford converges to scipy's answer
    assert "dense 200 float64" in out


def test_run_broken_script_exits_non_zero_with_file_line_col(tmp_path):
    bad = tmp_path / "bad.sdsl"
    bad.write_text(SPMV + "let A = random csr 10x10\nlet x = ones 10\nrun spmv(A, q)\n")
    p = subprocess.run([sys.executable, "-m", "sparsedsl.cli", "run", str(bad)], capture_output=True, text=True,
                       timeout=120, cwd=str(ROOT))
    assert p.returncode == 2 and p.stderr.startswith(f"{bad}:6:13: error: unknown tensor 'q'"), p.stderr
    assert "Traceback" not in p.stderr and p.stderr.rstrip().split("\n")[-1].strip().startswith("^")


def test_piped_input_runs_as_a_script(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sparsedsl.cli"], input=SPMV + "let A = eye 3\nlet x = ones 3\n"
                       "run spmv(A, x)\nrun spmv(A, y)\n", capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert "spmv(A, x) -> dense 3 float64" in p.stdout and "[1. 1. 1.]" in p.stdout
    assert p.returncode == 2 and p.stderr.startswith("<stdin>:7:13: error: unknown tensor 'y'"), p.stderr


def test_cli_version_and_bench_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sparsedsl {sd.__version__}"
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])  # the suite's own options
    assert e.value.code == 0 and "python -m benchmarks" in capsys.readouterr().out
