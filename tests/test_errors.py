"""Errors a user sees: FormatError for a bad tensor, DSLError (with a source location) for a bad program.

Python-front-end kernels below are index notation, not Python: their names are not Python variables.
"""
# ruff: noqa: F821

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl
from sparsedsl import DSLError, FormatError, SparseTensor, sparse_kernel
from sparsedsl.lang.syntax import parse_source


def i32(*a):
    return np.array(a, dtype=np.int32)


def f64(*a):
    return np.array(a, dtype=np.float64)


def u8(*a):
    return np.array(a, dtype=np.uint8)


def csr(shape, pos, crd, values):
    return SparseTensor("csr", shape, [{}, {"pos": pos, "crd": crd}], values)


# =================================================================================================
# Malformed tensors (raw constructor)
# =================================================================================================


def test_valid_raw_csr_is_accepted():
    t = csr((2, 3), i32(0, 1, 2), i32(2, 0), f64(1, 2))
    np.testing.assert_array_equal(t.to_numpy(), [[0, 0, 1], [2, 0, 0]])


@pytest.mark.parametrize("pos,crd,values,needles", [
    # pos not starting at 0
    (i32(1, 1, 2), i32(0), f64(1), ["level 1", "pos[0]", "1"]),
    # pos decreasing: first bad position is pos[2]
    (i32(0, 2, 1), i32(0, 1), f64(1, 2), ["level 1", "pos[2]", "decrease"]),
    # pos length wrong (2 rows need 3 entries)
    (i32(0, 1), i32(0), f64(1), ["level 1", "'pos'", "length 3", "got 2"]),
    (i32(), i32(), f64(), ["level 1", "'pos'", "length 3", "got 0"]),
    # crd out of range, above and below
    (i32(0, 1, 2), i32(0, 3), f64(1, 2), ["level 1", "crd[1] = 3", "[0, 3)"]),
    (i32(0, 1, 2), i32(0, -1), f64(1, 2), ["level 1", "crd[1] = -1"]),
    # crd unsorted within a row
    (i32(0, 2, 3), i32(2, 0, 1), f64(1, 2, 3), ["level 1", "crd[1] = 0", "crd[0] = 2"]),
    # crd duplicated within a row
    (i32(0, 1, 3), i32(0, 1, 1), f64(1, 2, 3), ["level 1", "crd[2] = 1", "crd[1] = 1"]),
    # crd length disagrees with pos[-1]
    (i32(0, 1, 2), i32(0), f64(1, 2), ["level 1", "'crd'", "length 2", "got 1"]),
], ids=["pos0", "pos-decreasing", "pos-length", "pos-empty", "crd-high", "crd-negative", "crd-unsorted",
        "crd-duplicate", "crd-length"])
def test_malformed_csr_levels(pos, crd, values, needles):
    with pytest.raises(FormatError) as ei:
        csr((2, 3), pos, crd, values)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)


def test_sorted_across_rows_is_fine():
    # a decrease between rows is not an ordering error
    t = csr((3, 3), i32(0, 2, 3, 4), i32(1, 2, 0, 0), f64(1, 2, 3, 4))
    assert t.to_numpy()[1, 0] == 3


def test_values_length_wrong():
    with pytest.raises(FormatError) as ei:
        csr((2, 3), i32(0, 1, 2), i32(0, 1), f64(1, 2, 3))
    msg = str(ei.value)
    assert "values" in msg and "(2)" in msg and "got 3" in msg


def test_values_length_wrong_dense():
    with pytest.raises(FormatError, match="values"):
        SparseTensor("dense", (2, 3), [{}, {}], np.zeros(5))


def test_values_must_be_1d_numpy():
    with pytest.raises(FormatError, match="1-D"):
        csr((2, 3), i32(0, 1, 2), i32(0, 1), np.ones((2, 1)))


def test_dcsr_level0_is_named():
    with pytest.raises(FormatError) as ei:
        SparseTensor("dcsr", (2, 3), [{"pos": i32(0, 5), "crd": i32(0, 1)},
                                      {"pos": i32(0, 1, 2), "crd": i32(0, 1)}], f64(1, 2))
    assert "level 0" in str(ei.value)


def test_coo_unsorted_second_level():
    with pytest.raises(FormatError) as ei:
        SparseTensor("coo", (2, 3), [{"pos": i32(0, 2), "crd": i32(1, 1)}, {"crd": i32(2, 0)}], f64(1, 2))
    msg = str(ei.value)
    assert "level 1" in msg and "entry 1" in msg


def test_missing_array_is_named():
    with pytest.raises(FormatError) as ei:
        SparseTensor("csr", (2, 3), [{}, {"pos": i32(0, 1, 2)}], f64(1, 2))
    assert "level 1" in str(ei.value) and "'crd'" in str(ei.value)


def test_wrong_number_of_levels():
    with pytest.raises(FormatError, match="levels"):
        SparseTensor("csr", (2, 3), [{}], f64(1, 2))


# ---- bitmap --------------------------------------------------------------------------------------


def bitmap(mask, pos, values, shape=(2, 3)):
    return SparseTensor("bitmap", shape, [{}, {"mask": mask, "pos": pos}], values)


def u32(*a):
    return np.array(a, dtype=np.uint32)


def test_valid_bitmap():
    # one word per row: coordinate j is bit j (least significant first)
    t = bitmap(u32(0b101, 0b100), i32(0, 2, 3), f64(1, 2, 3))
    np.testing.assert_array_equal(t.to_numpy(), [[1, 0, 2], [0, 0, 3]])


def test_valid_bitmap_rows_of_several_words():
    # 33 columns: two words per row; coordinate 32 is bit 0 of the row's second word
    t = bitmap(u32(1, 1, 0x80000000, 0), i32(0, 2, 3), f64(1, 2, 3), shape=(2, 33))
    want = np.zeros((2, 33))
    want[0, 0], want[0, 32], want[1, 31] = 1, 2, 3
    np.testing.assert_array_equal(t.to_numpy(), want)


def test_bitmap_bit_in_the_row_padding():
    # a row of 3 coordinates uses bits 0..2 of its word; bit 3 is padding
    with pytest.raises(FormatError) as ei:
        bitmap(u32(0b101, 0b1100), i32(0, 2, 4), f64(1, 2, 3, 4))
    msg = str(ei.value)
    assert "level 1" in msg and "mask[1]" in msg and "parent 1" in msg and "coordinate 3" in msg
    assert "padding" in msg


def test_bitmap_pos_disagrees_with_mask():
    with pytest.raises(FormatError) as ei:
        bitmap(u32(0b101, 0b100), i32(0, 1, 2), f64(1, 2))
    msg = str(ei.value)
    assert "level 1" in msg and "disagree" in msg and "parent 0" in msg


def test_bitmap_mask_length():
    with pytest.raises(FormatError) as ei:
        bitmap(u32(0b101, 0b100, 0), i32(0, 2, 3), f64(1, 2, 3))
    msg = str(ei.value)
    assert "level 1" in msg and "mask" in msg and "1 uint32 words per parent" in msg and "got 3" in msg


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint64])
def test_bitmap_mask_wrong_dtype(dtype):
    # the old layout (one byte per coordinate) is refused, not read as bits
    with pytest.raises(FormatError, match="'mask' must be a 1-D numpy array of uint32 words.*got a 1-D array of") as ei:
        bitmap(np.array([1, 0, 1, 0, 0, 1], dtype=dtype), i32(0, 2, 3), f64(1, 2, 3))
    assert "level 1" in str(ei.value)


# ---- N:M -----------------------------------------------------------------------------------------


def nm(groups, values, shape=(1, 8)):
    """An nm(2,4) tensor from each group's two in-group indices (7: an empty slot), packed 3 bits each."""
    return SparseTensor("nm(2,4)", shape, [{}, {"meta": np.array([a | b << 3 for a, b in groups], np.uint8)}],
                        values)


def test_valid_nm():
    t = nm([(0, 2), (1, 7)], f64(1, 2, 3, 0))
    np.testing.assert_array_equal(t.to_numpy(), [[1, 0, 2, 0, 0, 3, 0, 0]])


def test_nm_index_not_below_m():
    with pytest.raises(FormatError) as ei:
        nm([(0, 2), (1, 4)], f64(1, 2, 3, 4))
    msg = str(ei.value)
    assert "level 1" in msg and "group 1 slot 1" in msg and "index 4" in msg and "7" in msg


def test_nm_group_out_of_order():
    with pytest.raises(FormatError) as ei:
        nm([(0, 2), (3, 1)], f64(1, 2, 3, 4))
    msg = str(ei.value)
    assert "level 1" in msg and "group 1" in msg and "out of order" in msg


def test_nm_group_duplicate_index():
    with pytest.raises(FormatError, match="group 0"):
        nm([(2, 2), (7, 7)], f64(1, 2, 0, 0))


def test_nm_empty_slot_before_used_slot():
    with pytest.raises(FormatError, match="group 1"):
        nm([(0, 2), (7, 1)], f64(1, 2, 0, 4))


def test_nm_bits_above_the_fields():
    with pytest.raises(FormatError, match=r"meta\[1\] = 137 has bits set above"):
        SparseTensor("nm(2,4)", (1, 8), [{}, {"meta": u8(16, 137)}], f64(1, 2, 3, 0))


def test_nm_meta_of_the_wrong_width():
    with pytest.raises(FormatError, match="must be uint8.*asformat"):
        SparseTensor("nm(2,4)", (1, 8), [{}, {"meta": np.array([16, 57], np.uint16)}], f64(1, 2, 3, 0))
    with pytest.raises(FormatError, match="uint16"):
        SparseTensor("nm(4,8)", (1, 8), [{}, {"meta": u8(0)}], f64(1, 2, 3, 4))


def test_nm_too_many_slots_for_a_word():
    with pytest.raises(FormatError, match="64-bit word"):
        sparsedsl.asformat(np.ones((2, 32)), "nm(16,32)")


def test_nm_group_out_of_order_message_is_readable():
    with pytest.raises(FormatError) as ei:
        nm([(0, 2), (3, 1)], f64(1, 2, 3, 4))
    assert "[3, 1]" in str(ei.value) and "np." not in str(ei.value)


def test_nm_extent_not_multiple_of_m():
    with pytest.raises(FormatError) as ei:
        nm([(0, 2), (7, 7)], f64(1, 2, 0, 0), shape=(1, 6))
    msg = str(ei.value)
    assert "level 1" in msg and "multiple of 4" in msg


def test_nm_conversion_of_an_over_full_group_says_what_to_do():
    dense = np.array([[1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(FormatError) as ei:
        sparsedsl.asformat(dense, "nm(2,4)")
    msg = str(ei.value)
    assert "at most 2 of every 4" in msg and "group 0" in msg


def test_nm_conversion_of_a_valid_row():
    dense = np.array([[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 5.0]])
    np.testing.assert_array_equal(sparsedsl.asformat(dense, "nm(2,4)").to_numpy(), dense)


# ---- blocks, dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bsr(2,2)", "bsr(3,2)", "blocked_bitmap(2,2)"])
def test_block_not_dividing_shape(fmt):
    with pytest.raises(FormatError) as ei:
        sparsedsl.asformat(np.ones((5, 4)), fmt)
    msg = str(ei.value)
    assert "does not divide" in msg and "(5, 4)" in msg


def test_block_not_dividing_shape_from_scipy():
    with pytest.raises(FormatError, match="does not divide"):
        sparsedsl.asformat(sp.random(5, 4, density=0.5, format="csr", random_state=0), "bsr(2,2)")


def test_complex_values_raw():
    with pytest.raises(FormatError, match="complex"):
        csr((2, 3), i32(0, 1, 2), i32(0, 1), np.array([1, 2], dtype=complex))


def test_complex_values_asformat():
    with pytest.raises(FormatError, match="complex"):
        sparsedsl.asformat(np.ones((2, 2), dtype=complex), "csr")


@pytest.mark.parametrize("key", ["pos", "crd"])
def test_float_index_arrays(key):
    arrays = {"pos": i32(0, 1, 2), "crd": i32(0, 1)}
    arrays[key] = arrays[key].astype(np.float64)
    with pytest.raises(FormatError) as ei:
        SparseTensor("csr", (2, 3), [{}, arrays], f64(1, 2))
    msg = str(ei.value)
    assert "level 1" in msg and f"'{key}'" in msg and "float64" in msg


def test_list_instead_of_array():
    with pytest.raises(FormatError, match="1-D numpy array"):
        SparseTensor("csr", (2, 3), [{}, {"pos": [0, 1, 2], "crd": i32(0, 1)}], f64(1, 2))


# =================================================================================================
# Bad programs
# =================================================================================================

INTERNAL_NAMES = ("Traceback", "lower.py", "check.py", "syntax.py", "compiler.py", "lark", "site-packages")


def assert_points_at(err: DSLError, line: int, col: int, token: str | None = None):
    """The span is (line, col); the message shows that source line and a caret under column ``col``."""
    assert err.span is not None, str(err)
    assert (err.span.line, err.span.col) == (line, col), (err.span, str(err))
    msg = str(err)
    for bad in INTERNAL_NAMES:
        assert bad not in msg, (bad, msg)
    lines = msg.split("\n")
    at = [k for k, ln in enumerate(lines) if re.search(rf"\bat .*:{line}:{col}$", ln)]
    assert len(at) == 1, msg
    source, caret = lines[at[0] + 1], lines[at[0] + 2]
    assert source.strip() and caret.strip() and set(caret.strip()) == {"^"}, msg
    first = caret.index("^")
    assert first == 4 + col - 1, msg
    if token is not None:
        assert source[first:].startswith(token), (source[first:], token, msg)


def at_marker(text: str):
    """Strip the '@' marker from ``text``; return (text, line, col) of the marked character."""
    k = text.index("@")
    before = text[:k]
    line = before.count("\n") + 1
    col = k - (before.rfind("\n") + 1) + 1
    return text[:k] + text[k + 1:], line, col


def marked_line(fn, pattern: str):
    """(line, col) of the character after '@' in ``pattern`` on the line of ``fn``'s source marked ``# ERR``."""
    lines, first = inspect.getsourcelines(fn)
    hits = [k for k, ln in enumerate(lines) if "# ERR" in ln]
    assert len(hits) == 1
    code = lines[hits[0]].split("# ERR")[0]
    k = pattern.index("@")
    plain = pattern[:k] + pattern[k + 1:]
    assert code.count(plain) == 1, (plain, code)
    return first + hits[0], code.index(plain) + k + 1


# ---- text front end ------------------------------------------------------------------------------


def kernel_text(body, params="A: csr, x: dense", out="y: dense"):
    return f"# a kernel\nkernel k({params}) -> {out} {{\n  {body}\n}}\n"


def build_text(text):
    return sparsedsl.Kernel(parse_source(text)["kernels"]["k"])


TEXT_CASES = {
    "syntax-double-op": ("y[i] = A[i,j] * @* x[j]", {}, "syntax error"),
    "syntax-missing-bracket": ("y[i] = A[i,j @* x[j]", {}, "syntax error"),
    "syntax-bad-char": ("y[i] = A[i,j] @$ x[j]", {}, "syntax error"),
    "syntax-missing-equals": ("y[i] @A[i,j] * x[j]", {}, "syntax error"),
    "unknown-tensor": ("y[i] = @B[i,j] * x[j]", {}, "unknown tensor 'B'"),
    "index-repeated-left": ("y[i,@i] = A[i,j] * x[j]", {"out": "y: dense"}, "twice on the left"),
    "left-not-right": ("y[@k] = A[i,j] * x[j]", {}, "'k' on the left"),
    "unknown-function": ("y[i] = @foo(A[i,j]) * x[j]", {}, "unknown function 'foo'"),
    "arity": ("y[i] = A[i,j] * @where(x[j], x[j])", {}, "takes 3 arguments, got 2"),
    "arity-exp": ("y[i] = @exp(A[i,j], x[j])", {}, "takes 1 argument, got 2"),
    "unknown-reduction": ("y[i] = @prod[j](A[i,j] * x[j])", {}, "unknown reduction 'prod'"),
    "assign-input": ("@x[j] = A[i,j]\n  y[i] = A[i,j] * x[j]", {}, "'x' is an input"),
    "scalar-indexed": ("y[i] = A[i,j] * @a[j]", {"params": "A: csr, a: scalar"}, "scalar and cannot be indexed"),
    "scalar-as-tensor": ("y[i] = A[i,j] * @x", {}, "'x' is a tensor"),
    "reduced-index-on-left": ("y[i] = max[@i](A[i,j])", {}, "reduced but also appears on the left"),
    "not-an-output": ("@z[i] = A[i,j] * x[j]", {}, "'z' is not an output"),
    "access-repeated-index": ("y[i] = A[i,@i]", {}, "twice in one access"),
    "second-line": ("let t[i] = A[i,j] * x[j]\n  y[i] = t[i] + @bar(t[i])", {}, "unknown function 'bar'"),
}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_text_front_end_errors_point_at_the_token(case):
    body, kw, needle = TEXT_CASES[case]
    text, line, col = at_marker(kernel_text(body, **kw))
    token = text.split("\n")[line - 1][col - 1:col]
    with pytest.raises(DSLError) as ei:
        build_text(text)
    assert needle in ei.value.message, str(ei.value)
    assert_points_at(ei.value, line, col, token)
    assert f"<sdsl>:{line}:{col}" in str(ei.value)


def test_text_output_never_assigned_points_at_the_output():
    text, line, col = at_marker("kernel k(A: csr, x: dense) -> @y: dense {\n  let t[i] = A[i,j] * x[j]\n}\n")
    with pytest.raises(DSLError) as ei:
        build_text(text)
    assert "'y' is never assigned" in str(ei.value)
    assert_points_at(ei.value, line, col, "y")


def test_text_unknown_format_points_at_the_parameter():
    text, line, col = at_marker("kernel k(@A: cssr, x: dense) -> y: dense {\n  y[i] = A[i,j] * x[j]\n}\n")
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert "unknown format 'cssr'" in str(ei.value)
    assert_points_at(ei.value, line, col, "A")


def test_text_bad_format_declaration():
    text = "format blk = (i, j) -> (i: dense, q: compressed)\nkernel k(A: blk) -> y: dense {\n  y[i] = A[i,j]\n}\n"
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert ei.value.span.line == 1
    for bad in INTERNAL_NAMES:
        assert bad not in str(ei.value)


def test_text_shape_mismatch_at_call_points_at_x():
    text, line, col = at_marker(kernel_text("y[i] = A[i,j] * x[@j]"))
    k = build_text(text)
    A = sparsedsl.asformat(sp.random(5, 7, density=0.5, format="csr", random_state=0), "csr")
    with pytest.raises(DSLError) as ei:
        k(A=A, x=np.ones(6))
    msg = str(ei.value)
    assert "6" in msg and "7" in msg and "do not agree" in msg
    assert_points_at(ei.value, line, col, "j")


def test_text_rank_mismatch_at_call_points_at_the_access():
    text, line, col = at_marker(kernel_text("y[i] = A[i,j] * @x[j]"))
    k = build_text(text)
    A = sparsedsl.asformat(sp.random(5, 7, density=0.5, format="csr", random_state=0), "csr")
    with pytest.raises(DSLError) as ei:
        k(A=A, x=np.ones((7, 2)))
    assert "2-D" in str(ei.value)
    assert_points_at(ei.value, line, col, "x[j]")


def test_text_rank_mismatch_with_csr_is_caught_at_build_time():
    text, line, col = at_marker(kernel_text("y[i] = @A[i] * x[i]"))
    with pytest.raises(DSLError) as ei:
        build_text(text)
    assert "2-D" in str(ei.value)
    assert_points_at(ei.value, line, col, "A[i]")


def test_text_rank_mismatch_with_csr_at_call_time():
    text, line, col = at_marker(kernel_text("y[i] = @A[i] * x[i]"))
    A = sparsedsl.asformat(sp.random(5, 5, density=0.5, format="csr", random_state=0), "csr")
    with pytest.raises(DSLError) as ei:
        build_text(text)(A=A, x=np.ones(5))
    assert_points_at(ei.value, line, col, "A[i]")


# ---- one-liner (compile / compute) -------------------------------------------------------------

ONE_LINER_CASES = {
    "syntax-double-op": ("y[i] = A[i,j] * @* x[j]", "syntax error"),
    "syntax-bad-char": ("y[i] = A[i,j] @$ x[j]", "syntax error"),
    "syntax-second-line": ("t[i] = A[i,j] * x[j]\n@* t[i]", "syntax error"),
    "index-repeated-left": ("y[i,@i] = A[i,j] * x[j]", "twice on the left"),
    "left-not-right": ("y[@k] = A[i,j] * x[j]", "'k' on the left"),
    "unknown-function": ("y[i] = @foo(A[i,j]) * x[j]", "unknown function 'foo'"),
    "arity": ("y[i] = A[i,j] * @where(x[j], x[j])", "takes 3 arguments, got 2"),
    "unknown-reduction": ("y[i] = @prod[j](A[i,j] * x[j])", "unknown reduction 'prod'"),
    "second-statement": ("t[i] = A[i,j] * x[j]; y[i] = @foo(t[i])", "unknown function 'foo'"),
}


@pytest.mark.parametrize("case", sorted(ONE_LINER_CASES))
def test_one_liner_errors_point_at_the_token(case):
    expr, needle = ONE_LINER_CASES[case]
    text, line, col = at_marker(expr)
    token = text.split("\n")[line - 1][col - 1:col]
    with pytest.raises(DSLError) as ei:
        sparsedsl.compile(text, A="csr")
    assert needle in ei.value.message, str(ei.value)
    assert_points_at(ei.value, line, col, token)


def test_one_liner_empty_program():
    with pytest.raises(DSLError, match="no statement"):
        sparsedsl.compile("   ")


def test_one_liner_shape_mismatch_points_at_x():
    text, line, col = at_marker("y[i] = A[i,j] * x[@j]")
    A = sparsedsl.asformat(sp.random(5, 7, density=0.5, format="csr", random_state=0), "csr")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compute(text, A=A, x=np.ones(6))
    assert "do not agree" in str(ei.value)
    assert_points_at(ei.value, line, col, "j")


def test_one_liner_rank_mismatch_at_call():
    text, line, col = at_marker("y[i] = @A[i] * x[i]")
    A = sparsedsl.asformat(sp.random(5, 5, density=0.5, format="csr", random_state=0), "csr")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compute(text, A=A, x=np.ones(5))
    assert_points_at(ei.value, line, col, "A[i]")


def test_one_liner_rank_mismatch_with_csr_at_compile_time():
    text, line, col = at_marker("y[i] = @A[i] * x[i]")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compile(text, A="csr")
    assert_points_at(ei.value, line, col, "A[i]")


def test_one_liner_scalar_indexed():
    # alpha is indexed, so the one-liner takes it as a tensor; the bare use is the error
    text, line, col = at_marker("y[i] = A[i,j] * @alpha * alpha[j]")
    with pytest.raises(DSLError, match="is a tensor") as ei:
        sparsedsl.compile(text, A="csr")
    assert_points_at(ei.value, line, col, "alpha")


def test_one_liner_unknown_operand_name_at_call():
    k = sparsedsl.compile("y[i] = A[i,j] * x[j]", A="csr")
    with pytest.raises(DSLError, match="no operand 'z'"):
        k(A=np.eye(3), x=np.ones(3), z=1)
    with pytest.raises(DSLError, match="no operand was given for 'x'"):
        k(A=np.eye(3))


# ---- Python front end ------------------------------------------------------------------------------


def _raises_at(fn_holder, pattern, needle, run=None):
    """Run ``run`` (default: build the kernel) and check the DSLError points at the '# ERR' line."""
    line, col = marked_line(fn_holder, pattern)
    with pytest.raises(DSLError) as ei:
        run()
    assert needle in ei.value.message, str(ei.value)
    k = pattern.index("@")
    assert_points_at(ei.value, line, col, (pattern[:k] + pattern[k + 1:])[k:])
    assert ei.value.span.file.endswith("test_errors.py")
    return ei.value


def test_py_not_index_notation():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = A[i, j] ** x[j]  # ERR
            return y
    err = _raises_at(test_py_not_index_notation, "y[i] = @A[i, j] ** x[j]", "not index notation", build)
    # the caret covers the unsupported operator
    src, caret = str(err).split("\n")[-2:]
    assert caret[src.index("**")] == "^"


def test_py_augmented_assignment():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] += A[i, j] * x[j]  # ERR
            return y
    _raises_at(test_py_augmented_assignment, "@y[i] +=", "only index-notation assignments", build)


def test_py_index_not_a_name():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = A[i, 0] * x[i]  # ERR
            return y
    _raises_at(test_py_index_not_a_name, "A[i, @0]", "plain name", build)


def test_py_unknown_tensor():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = B[i, j] * x[j]  # ERR
            return y
    _raises_at(test_py_unknown_tensor, "@B[i, j]", "unknown tensor 'B'", build)


def test_py_index_repeated_on_left():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i, i] = A[i, j] * x[j]  # ERR
            return y
    _raises_at(test_py_index_repeated_on_left, "y[i, @i]", "twice on the left", build)


def test_py_left_index_not_on_right():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[k] = A[i, j] * x[j]  # ERR
            return y
    _raises_at(test_py_left_index_not_on_right, "y[@k]", "'k' on the left", build)


def test_py_unknown_function():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = foo(A[i, j]) * x[j]  # ERR
            return y
    _raises_at(test_py_unknown_function, "@foo(", "unknown function 'foo'", build)


def test_py_wrong_arity():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = A[i, j] * where(x[j], x[j])  # ERR
            return y
    _raises_at(test_py_wrong_arity, "@where(", "takes 3 arguments, got 2", build)


def test_py_unknown_reduction():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = prod[j](A[i, j] * x[j])  # ERR
            return y
    _raises_at(test_py_unknown_reduction, "@prod[j]", "unknown reduction 'prod'", build)


def test_py_assign_to_input():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            x[j] = A[i, j]  # ERR
            y[i] = A[i, j] * x[j]
            return y
    _raises_at(test_py_assign_to_input, "@x[j] =", "'x' is an input", build)


def test_py_output_never_assigned():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            t[i] = A[i, j] * x[j]
            return y  # ERR
    _raises_at(test_py_output_never_assigned, "@return y", "'y' is never assigned", build)


def test_py_scalar_indexed():
    def build():
        @sparse_kernel
        def k(A: csr, alpha: scalar) -> dense:
            y[i] = A[i, j] * alpha[j]  # ERR
            return y
    _raises_at(test_py_scalar_indexed, "@alpha[j]", "scalar and cannot be indexed", build)


def test_py_shape_mismatch_at_call_points_at_x():
    @sparse_kernel
    def k(A: csr, x: dense) -> dense:
        y[i] = A[i, j] * x[j]  # ERR
        return y

    A = sparsedsl.asformat(sp.random(5, 7, density=0.5, format="csr", random_state=0), "csr")
    err = _raises_at(test_py_shape_mismatch_at_call_points_at_x, "x[@j]", "do not agree",
                     lambda: k(A=A, x=np.ones(6)))
    assert "6" in err.message and "7" in err.message


def test_py_rank_mismatch_at_call():
    @sparse_kernel
    def k(A: dense, x: dense) -> dense:
        y[i] = A[i] * x[i]  # ERR
        return y

    _raises_at(test_py_rank_mismatch_at_call, "@A[i]", "2-D", lambda: k(A=np.ones((5, 5)), x=np.ones(5)))


def test_py_rank_mismatch_with_csr_at_definition():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = A[i] * x[i]  # ERR
            return y
    _raises_at(test_py_rank_mismatch_with_csr_at_definition, "@A[i]", "2-D", build)


def test_py_errors_keep_internal_frames_out_of_the_message():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:
            y[i] = A[i, j] * nope(x[j])  # ERR
            return y
    with pytest.raises(DSLError) as ei:
        build()
    for bad in INTERNAL_NAMES:
        assert bad not in str(ei.value)
    assert ei.value.__cause__ is None or isinstance(ei.value.__cause__, DSLError)


# =================================================================================================
# Fuzzing
# =================================================================================================

VALID_PROGRAMS = [
    "y[i] = A[i,j] * x[j]",
    "C[i,j] = S[i,j] * U[i,k] * V[k,j]",
    "m[i] = max[j](A[i,j])",
    "C[i,j] = min_plus[k](A[i,k] * B[k,j])",
    "y[i] = exp(A[i,j]) * where(x[j] > 0, x[j], -x[j])",
    "let t[i] = A[i,j] * x[j]; y[i] = relu(t[i]) + alpha * 2.5",
    "B[i,j] = (A[i,j] <= 1) * -A[i,j] / 3",
]
ALPHABET = "yABCxijk[](),;=+-*/<>!.0123456789 \n_maxsumexpletwhr"


def _mutate(text, ops):
    chars = list(text)
    for kind, where, ch in ops:
        if not chars:
            chars.append(ch)
            continue
        k = where % (len(chars) + (kind == "insert"))
        if kind == "delete" and k < len(chars):
            del chars[k]
        elif kind == "insert":
            chars.insert(k, ch)
        elif k < len(chars):
            chars[k] = ch
    return "".join(chars)


near_miss = st.builds(
    _mutate,
    st.sampled_from(VALID_PROGRAMS),
    st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, 200),
                       st.sampled_from(list(ALPHABET))), min_size=1, max_size=4),
)
garbage = st.text(alphabet=ALPHABET, max_size=40) | st.text(max_size=30)


def _compile_only_dsl_errors(text):
    try:
        sparsedsl.compile(text)
    except DSLError as err:
        assert "Traceback" not in str(err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_fuzz_garbage_into_compile_raises_only_dsl_error(text):
    _compile_only_dsl_errors(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_miss)
def test_fuzz_near_miss_programs_into_compile_raise_only_dsl_error(text):
    _compile_only_dsl_errors(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_miss)
def test_fuzz_near_miss_kernels_into_parse_source_raise_only_dsl_error(body):
    text = f"kernel k(A: csr, B: csr, S: csr, U: dense, V: dense, x: dense, alpha: scalar) -> y: dense {{\n{body}\n}}\n"
    try:
        build_text(text)
    except DSLError as err:
        assert "Traceback" not in str(err)


RAW_FORMATS = {
    "csr": (2, [("pos", "crd")]),
    "csc": (2, [("pos", "crd")]),
    "dcsr": (2, [("pos", "crd"), ("pos", "crd")]),
    "coo": (2, [("pos", "crd"), ("crd",)]),
    "bitmap": (2, [("mask", "pos")]),
    "nm(2,4)": (2, [("meta",)]),
    "bsr(2,2)": (2, [("pos", "crd")]),
    "csf": (3, [("pos", "crd")] * 3),
}


@st.composite
def raw_tensors(draw):
    name = draw(st.sampled_from(sorted(RAW_FORMATS)))
    ndim, sparse_levels = RAW_FORMATS[name]
    fmt = sparsedsl.as_format(name, ndim)
    shape = tuple(draw(st.integers(0, 5)) for _ in range(ndim))
    levels = []
    keys = iter(sparse_levels)
    for spec in fmt.levels:
        if type(spec.type).__name__ == "Dense":
            levels.append({})
            continue
        arrays = {}
        for key in next(keys):
            n = draw(st.integers(0, 9))
            if key == "mask":  # words with low bits, padding bits, the top bit
                words = st.sampled_from([0, 1, 2, 5, 0x10, 0x80000000, 0xFFFFFFFF])
                arrays[key] = np.array(draw(st.lists(words, min_size=n, max_size=n)), dtype=np.uint32)
            elif name.startswith("nm"):  # two 3-bit indices a byte: valid, empty (7), too large, disordered
                arrays[key] = np.array(draw(st.lists(st.sampled_from([0, 8, 16, 17, 57, 63, 4, 12, 64, 255]),
                                                     min_size=n, max_size=n)), dtype=np.uint8)
            else:
                dtype = draw(st.sampled_from([np.int32, np.int64, np.uint8]))
                lo = 0 if dtype == np.uint8 else -2
                arrays[key] = np.array(draw(st.lists(st.integers(lo, 9), min_size=n, max_size=n)), dtype=dtype)
        levels.append(arrays)
    nvals = draw(st.integers(0, 12))
    values = np.arange(1, nvals + 1, dtype=draw(st.sampled_from([np.float64, np.float32, np.int64])))
    return name, shape, levels, values


@st.composite
def mutated_tensors(draw):
    """A valid tensor's level arrays with one small change (often still valid, often not)."""
    name = draw(st.sampled_from(sorted(RAW_FORMATS)))
    ndim = RAW_FORMATS[name][0]
    if name.startswith("nm"):
        shape = (draw(st.integers(0, 3)), draw(st.sampled_from([0, 4, 8])))
    elif name.startswith("bsr"):
        shape = tuple(draw(st.sampled_from([0, 2, 4])) for _ in range(ndim))
    else:
        shape = tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    size = int(np.prod(shape))
    dense = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0]), min_size=size, max_size=size)))
    dense = dense.reshape(shape)
    if name.startswith("nm") and size:
        dense.reshape(-1, 4)[:, 2:] = 0  # at most 2 entries per group of 4
    t = sparsedsl.asformat(dense, name)
    levels = [{k: v.copy() for k, v in lv.items()} for lv in t.levels]
    values = t.values.copy()
    targets = [(k, key) for k, lv in enumerate(levels) for key in lv]
    if targets and draw(st.booleans()):
        k, key = draw(st.sampled_from(targets))
        a = levels[k][key]
        op = draw(st.sampled_from(["set", "append", "drop", "swap"]))
        if op == "set" and len(a):
            a[draw(st.integers(0, len(a) - 1))] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 255]))
        elif op == "append":
            a = np.append(a, np.array([draw(st.sampled_from([0, 1, 3, 255]))], dtype=a.dtype))
        elif op == "drop" and len(a):
            a = np.delete(a, draw(st.integers(0, len(a) - 1)))
        elif op == "swap" and len(a) > 1:
            x, y = draw(st.integers(0, len(a) - 1)), draw(st.integers(0, len(a) - 1))
            a[[x, y]] = a[[y, x]]
        levels[k][key] = a
    elif draw(st.booleans()):
        values = values[: draw(st.integers(0, len(values)))] if draw(st.booleans()) else np.append(values, 7.0)
    return name, shape, levels, values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_tensors() | mutated_tensors())
def test_fuzz_raw_constructor_raises_only_format_error(raw):
    name, shape, levels, values = raw
    try:
        t = SparseTensor(name, shape, levels, values)
    except FormatError:
        return
    dense = t.to_numpy()
    assert dense.shape == shape
    coords, vals = t.coordinates()
    assert coords.shape == (len(shape), len(vals))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tensors())
def test_fuzz_accepted_raw_tensors_round_trip_through_csr_coordinates(raw):
    name, shape, levels, values = raw
    try:
        t = SparseTensor(name, shape, levels, values)
    except FormatError:
        return
    # a tensor that validates converts to any other format without error and keeps its entries
    for target in ("coo", "dense"):
        other = sparsedsl.as_format(target, len(shape))
        np.testing.assert_array_equal(sparsedsl.asformat(t, other).to_numpy(), t.to_numpy())


# =================================================================================================
# Bad inputs from outside: scipy matrices, coordinate lists, Python objects (issue 13)
# =================================================================================================

SCIPY_DENSE = np.array([[1.0, 0, 2, 0], [0, 0, 3, 0], [4, 5, 0, 0], [0, 0, 0, 6]])
ALL_TARGETS = ["csr", "csc", "coo", "dcsr", "dense", "bitmap", "bsr(2,2)"]


def _set(m, name, value):
    setattr(m, name, np.asarray(value, dtype=getattr(m, name).dtype))
    return m


def _replace(m, name, value):
    setattr(m, name, value)
    return m


def _poke(m, name, k, value):
    arr = getattr(m, name).copy()
    arr[k] = value
    return _set(m, name, arr)


# (a valid matrix, made malformed through its public attributes, which scipy checks only in part)
MALFORMED_SCIPY = {
    # csr: indptr [0, 2, 3, 5, 6], indices [0, 2, 2, 0, 1, 3]
    "csr-indptr-decreasing": (lambda: _set(sp.csr_matrix(SCIPY_DENSE), "indptr", [0, 2, 1, 5, 6]),
                              ["csr matrix", "indptr must not decrease", "indptr[2] = 1 < indptr[1] = 2"]),
    "csr-indptr-first": (lambda: _set(sp.csr_matrix(SCIPY_DENSE), "indptr", [1, 2, 3, 5, 6]),
                         ["indptr[0] must be 0, got 1"]),
    "csr-indptr-length": (lambda: _set(sp.csr_matrix(SCIPY_DENSE), "indptr", [0, 2, 3, 6]),
                          ["indptr must have length 5", "got 4"]),
    "csr-indptr-end": (lambda: _set(sp.csr_matrix(SCIPY_DENSE), "indptr", [0, 2, 3, 5, 5]),
                       ["indptr[-1] = 5", "length of indices, 6"]),
    "csr-index-high": (lambda: _poke(sp.csr_matrix(SCIPY_DENSE), "indices", 1, 4),
                       ["indices[1] = 4 is outside [0, 4)"]),
    "csr-index-negative": (lambda: _poke(sp.csr_array(SCIPY_DENSE), "indices", 3, -1),
                           ["indices[3] = -1 is outside [0, 4)"]),
    "csr-data-length": (lambda: _set(sp.csr_matrix(SCIPY_DENSE), "data", [1.0, 2, 3]),
                        ["data must have shape (6,)", "got (3,)"]),
    "csr-float-indices": (lambda: _replace(sp.csr_matrix(SCIPY_DENSE), "indices", np.zeros(6)),
                          ["indices must hold integers", "float64"]),
    "csc-indptr-decreasing": (lambda: _set(sp.csc_matrix(SCIPY_DENSE), "indptr", [0, 2, 1, 5, 6]),
                              ["csc matrix", "indptr[2] = 1 < indptr[1] = 2", "column 1"]),
    "csc-index-high": (lambda: _poke(sp.csc_array(SCIPY_DENSE), "indices", 0, 9),
                       ["csc matrix", "indices[0] = 9 is outside [0, 4)", "row index"]),
    "coo-row-high": (lambda: _poke(sp.coo_matrix(SCIPY_DENSE), "row", 2, 4), ["coo matrix", "row[2] = 4"]),
    "coo-col-negative": (lambda: _poke(sp.coo_array(SCIPY_DENSE), "col", 0, -3), ["col[0] = -3"]),
    "coo-length": (lambda: _set(sp.coo_matrix(SCIPY_DENSE), "data", [1.0, 2.0]),
                   ["row has 6 entries but data has 2"]),
    "bsr-index-high": (lambda: _poke(sp.bsr_matrix(SCIPY_DENSE, blocksize=(2, 2)), "indices", 0, 2),
                       ["bsr matrix", "indices[0] = 2 is outside [0, 2)", "block column"]),
    "bsr-indptr-decreasing": (lambda: _set(sp.bsr_matrix(SCIPY_DENSE, blocksize=(2, 2)), "indptr", [0, 3, 2]),
                              ["bsr matrix", "indptr[2] = 2 < indptr[1] = 3"]),
}


@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("case", sorted(MALFORMED_SCIPY))
def test_malformed_scipy_input_is_a_format_error(case, target):
    make, needles = MALFORMED_SCIPY[case]
    m = make()
    with pytest.raises(FormatError) as ei:
        sparsedsl.asformat(m, target)
    msg = str(ei.value)
    for n in needles + [f"shape {m.shape}", "rebuild it"]:
        assert n in msg, (n, msg)


def test_malformed_scipy_csr_does_not_corrupt_the_heap():
    # scipy's C++ code on this indptr ended the process with "free(): invalid next size"
    child = ("import numpy as np, scipy.sparse as sp, sparsedsl as sd\n"
             "m = sp.csr_matrix((np.ones(3), np.array([0, 1, 2]), np.array([0, 2, 1, 3])), shape=(3, 3))\n"
             "for f in ('csr', 'csc', 'coo', 'dense', 'dcsr'):\n"
             "    try:\n"
             "        sd.asformat(m, f)\n"
             "    except sd.FormatError as e:\n"
             "        print('FormatError', 'indptr[2] = 1 < indptr[1] = 2' in str(e))\n")
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[:5] == ["FormatError True"] * 5, p.stdout


def test_valid_scipy_with_duplicates_is_summed_and_left_as_it_was():
    m = sp.csr_matrix((np.array([1.0, 2, 3]), np.array([2, 0, 2]), np.array([0, 3, 3])), shape=(2, 3))
    before = (m.indices.copy(), m.data.copy())
    for target in ("csr", "coo", "dense"):
        np.testing.assert_array_equal(sparsedsl.asformat(m, target).to_numpy(), [[2, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(m.indices, before[0])
    np.testing.assert_array_equal(m.data, before[1])


@pytest.mark.parametrize("kind", ["csr_matrix", "csc_array", "coo_matrix", "bsr_array", "lil_matrix", "dok_array"])
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_valid_scipy_input_converts_to_every_format(kind, target):
    m = getattr(sp, kind)(SCIPY_DENSE, **({"blocksize": (2, 2)} if kind.startswith("bsr") else {}))
    np.testing.assert_array_equal(sparsedsl.asformat(m, target).to_numpy(), SCIPY_DENSE)


BAD_COORDINATES = {
    "fewer-values": (lambda: ([[0, 1], [1, 2]], [1.0, 2.0, 3.0], (2, 3)),
                     ["one value per coordinate column (2)", "got shape (3,)"]),
    "more-coordinates": (lambda: ([[0, 1, 1], [1, 2, 0]], [1.0, 2.0], (2, 3)),
                         ["one value per coordinate column (3)", "got shape (2,)"]),
    "fractional": (lambda: ([[0, 1], [1, 2.5]], [1.0, 2.0], (2, 3)),
                   ["must be integers", "coordinate 1 of dimension 1 is 2.5"]),
    "nan": (lambda: ([[0, np.nan], [1, 2]], [1.0, 2.0], (2, 3)), ["must be integers", "dimension 0 is nan"]),
    "strings": (lambda: ([["a", "b"], ["c", "d"]], [1.0, 2.0], (2, 3)), ["must be integers", "dtype <U1"]),
    "three-rows-for-2d": (lambda: ([[0, 1], [1, 2], [0, 0]], [1.0, 2.0], (2, 3)),
                          ["shape (ndim, n) = (2, n)", "got shape (3, 2)"]),
    "one-row-for-2d": (lambda: ([[0, 1]], [1.0, 2.0], (2, 3)), ["(ndim, n) = (2, n)", "got shape (1, 2)"]),
    "flat-for-2d": (lambda: ([0, 1, 1, 2], [1.0, 2.0], (2, 3)), ["(ndim, n) = (2, n)", "got shape (4,)"]),
    "ragged": (lambda: ([[0, 1], [1]], [1.0, 2.0], (2, 3)), ["coordinates must be a rectangular array", "ragged"]),
    "ragged-values": (lambda: ([[0, 1], [1, 2]], [[1.0], [2.0, 3.0]], (2, 3)), ["values must be", "ragged"]),
    "none": (lambda: (None, [1.0], (2, 3)), ["coordinates must be an array, got None"]),
    "none-values": (lambda: ([[0], [1]], None, (2, 3)), ["values must be an array, got None"]),
    "string-values": (lambda: ([[0], [1]], ["x"], (2, 3)), ["dtype <U1 is not supported"]),
    "out-of-range": (lambda: ([[0, 2], [1, 2]], [1.0, 2.0], (2, 3)), ["coordinate 2 of dimension 0", "[0, 2)"]),
    "negative-shape": (lambda: ([[0], [1]], [1.0], (2, -3)), ["shape must be a tuple of non-negative integers",
                                                               "(2, -3)"]),
    "fractional-shape": (lambda: ([[0], [1]], [1.0], (2, 2.5)), ["non-negative integers, got (2, 2.5)"]),
    "no-shape": (lambda: ([[0], [1]], [1.0], None), ["non-negative integers, got None"]),
}


@pytest.mark.parametrize("case", sorted(BAD_COORDINATES))
def test_bad_coordinates_are_format_errors(case):
    make, needles = BAD_COORDINATES[case]
    coords, values, shape = make()
    with pytest.raises(FormatError) as ei:
        sparsedsl.from_coordinates(coords, values, shape, "csr")
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))


def test_good_coordinates_in_other_spellings():
    # integral floats, a flat list for a 1-D tensor, no entries at all
    t = sparsedsl.from_coordinates(np.array([[0.0, 1.0], [2.0, 0.0]]), [1.0, 2.0], (2, 3), "csr")
    np.testing.assert_array_equal(t.to_numpy(), [[0, 0, 1], [2, 0, 0]])
    v = sparsedsl.from_coordinates([3, 1], [5, 6], (4,), "sparse")
    np.testing.assert_array_equal(v.to_numpy(), [0, 6, 0, 5])
    e = sparsedsl.from_coordinates([], [], (2, 3), "coo")
    assert e.nnz == 0 and e.shape == (2, 3)


BAD_OBJECTS = {
    "ragged": ([[1.0, 2.0], [3.0]], ["ragged nested lists", "from_coordinates"]),
    "none": (None, ["got None"]),
    "string": ("abc", ["got a str ('abc')"]),
    "bytes": (b"abc", ["got a bytes"]),
    "object-array": (np.array([1, "a", None], dtype=object), ["numpy array of dtype object"]),
    "strings-array": (np.array(["1", "2"]), ["numpy array of dtype <U1"]),
    "dict": ({"a": 1}, ["an object of type dict"]),
    "complex": (np.ones(3, dtype=complex), ["complex128 is not supported"]),
}


@pytest.mark.parametrize("target", ["dense", "csr", "coo"])
@pytest.mark.parametrize("case", sorted(BAD_OBJECTS))
def test_asformat_of_a_non_array_is_a_format_error(case, target):
    obj, needles = BAD_OBJECTS[case]
    with pytest.raises(FormatError) as ei:
        sparsedsl.asformat(obj, target)
    msg = str(ei.value)
    assert "complex" in case or "asformat() takes a numpy array, a scipy.sparse matrix" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_zero_copy_csr_holds_read_only_views_of_the_scipy_arrays():
    m = sp.random(50, 40, density=0.1, format="csr", random_state=0)
    A = sparsedsl.asformat(m, "csr")
    for mine, theirs in ((A.levels[1]["pos"], m.indptr), (A.levels[1]["crd"], m.indices), (A.values, m.data)):
        assert np.shares_memory(mine, theirs) and not mine.flags.writeable
        assert theirs.flags.writeable  # the user's matrix is left as it was
    with pytest.raises(ValueError, match="read-only"):
        A.levels[1]["crd"][0] = 39
    with pytest.raises(ValueError, match="read-only"):
        A.to_scipy().indices[0] = 39
    # nothing in the package writes into them: kernels (outputs are fresh), conversions, scipy
    x = np.arange(40.0)
    np.testing.assert_allclose(sparsedsl.compute("y[i] = A[i,j] * x[j]", A=A, x=x), m @ x)
    C = sparsedsl.compute("C[i,j] = A[i,k] * B[j,k]", A=A, B=A, out_format="csr")
    np.testing.assert_allclose(C.to_numpy(), (m @ m.T).toarray())
    for target in ("csc", "coo", "dcsr", "dense"):
        np.testing.assert_array_equal(A.asformat(target).to_numpy(), m.toarray())
    np.testing.assert_array_equal(A.T.to_numpy(), m.toarray().T)
    np.testing.assert_allclose(A.astype(np.float32).to_numpy(), m.toarray().astype(np.float32))
    np.testing.assert_allclose(A.to_scipy() @ x, m @ x)


# =================================================================================================
# Dense tensors as operands; format names; the Python front end; option names (issue 13)
# =================================================================================================


def test_a_dense_format_tensor_is_an_operand_of_every_kernel():
    rng = np.random.default_rng(0)
    Ad = rng.random((5, 4)) * (rng.random((5, 4)) < 0.5)
    x = rng.random(4)
    A, xt, Acsr = sparsedsl.asformat(Ad), sparsedsl.asformat(x), sparsedsl.asformat(Ad, "csr")
    assert A.format.is_dense and xt.format.is_dense
    np.testing.assert_allclose(sparsedsl.compute("y[i] = A[i,j]*x[j]", A=A, x=xt), Ad @ x)
    np.testing.assert_allclose(sparsedsl.compile("y[i] = A[i,j]*x[j]", A="csr")(A=A, x=xt), Ad @ x)
    np.testing.assert_allclose(sparsedsl.compile("y[i] = A[i,j]*x[j]", A="dense", x="dense")(A, xt), Ad @ x)
    C = sparsedsl.compute("C[i,j] = A[i,k] * B[j,k]", A=A, B=Acsr, out_format="csr")
    np.testing.assert_allclose(C.to_numpy(), Ad @ Ad.T)
    np.testing.assert_allclose(sparsedsl.compute("C[i,j] = A[i,j] + B[i,j]", A=A, B=Acsr).reshape(5, 4), 2 * Ad)
    np.testing.assert_allclose(sparsedsl.compute("m[i] = max[j](A[i,j])", A=A), Ad.max(axis=1))
    np.testing.assert_allclose(sparsedsl.compute("y[i] = a * x[i]", x=xt, a=2.0), 2 * x)

    @sparse_kernel
    def scaled(A: dense, x: dense, alpha: scalar) -> dense:
        y[i] = alpha * A[i, j] * x[j]
        return y

    np.testing.assert_allclose(scaled(A=A, x=xt, alpha=3.0), 3 * Ad @ x)
    np.testing.assert_allclose(scaled.reference(A=A, x=xt, alpha=3.0), 3 * Ad @ x)
    assert "loop order" in sparsedsl.explain(scaled, A=A, x=xt, alpha=3.0)


def test_misspelt_format_in_compile_points_at_the_operand():
    text, line, col = at_marker("y[i] = @A[i,j] * x[j]")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compile(text, A="cssr")
    assert "unknown format 'cssr' for 'A'; did you mean 'csr'?" in ei.value.message
    assert_points_at(ei.value, line, col, "A[i,j]")


def test_misspelt_out_format_points_at_the_result():
    text, line, col = at_marker("@C[i,j] = A[i,k] * B[k,j]")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compile(text, out_format="cssc")
    assert "unknown format 'cssc' for the output 'C'; did you mean 'csc'?" in ei.value.message
    assert_points_at(ei.value, line, col, "C[i,j]")


@pytest.mark.parametrize("fmt,needle", [("bsr", "write e.g. 'bsr(4,4)'"), ("nm(2)", "bad format 'nm(2)'"),
                                        ("(i, j) -> (i: dense, q: compressed)", "not one of (i, j)")])
def test_bad_format_arguments_in_compile(fmt, needle):
    text, line, col = at_marker("y[i] = @A[i,j] * x[j]")
    with pytest.raises(DSLError) as ei:
        sparsedsl.compile(text, A=fmt)
    assert needle in ei.value.message
    assert_points_at(ei.value, line, col, "A")


def test_a_format_that_is_not_a_name():
    with pytest.raises(DSLError, match="the format of 'A' must be a name such as 'csr'"):
        sparsedsl.compile("y[i] = A[i,j] * x[j]", A=np.eye(2))


def test_py_misspelt_annotation_points_at_it():
    def build():
        @sparse_kernel
        def k(A: csrr, x: dense) -> dense:  # ERR
            y[i] = A[i, j] * x[j]
            return y
    err = _raises_at(test_py_misspelt_annotation_points_at_it, "A: @csrr", "unknown format 'csrr'", build)
    assert "did you mean 'csr'?" in err.message


def test_py_misspelt_return_annotation_points_at_it():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dnese:  # ERR
            y[i] = A[i, j] * x[j]
            return y
    err = _raises_at(test_py_misspelt_return_annotation_points_at_it, "-> @dnese", "unknown format 'dnese'", build)
    assert "did you mean 'dense'?" in err.message


def test_text_misspelt_formats_suggest_the_name():
    text, line, col = at_marker("format blocked = (i, j) -> (i: dense, j: compressed)\n"
                                "kernel k(A: csr, x: dense) -> @y: blockd {\n  y[i] = A[i,j] * x[j]\n}\n")
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert "unknown format 'blockd' for 'y'; did you mean 'blocked'?" in ei.value.message
    assert_points_at(ei.value, line, col, "y")
    text, line, col = at_marker(kernel_text("y[i] = A[i,j] * x[j]", params="@A: csrr, x: dense"))
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert "did you mean 'csr'?" in ei.value.message
    assert_points_at(ei.value, line, col, "A")


def test_py_async_def():
    def build():
        @sparse_kernel
        async def k(A: csr, x: dense) -> dense:  # ERR
            y[i] = A[i, j] * x[j]
            return y
    _raises_at(test_py_async_def, "@async def", "not 'async def'", build)


def test_py_lambda():
    def build():
        return sparse_kernel(lambda A, x: A * x)  # ERR
    _raises_at(test_py_lambda, "sparse_kernel(@lambda", "a lambda cannot be a sparse kernel", build)


def test_py_only_a_docstring():
    def build():
        @sparse_kernel
        def k(A: csr, x: dense) -> dense:  # ERR
            """Nothing here yet."""
    _raises_at(test_py_only_a_docstring, "@def k(", "has no statement", build)


def test_py_varargs_and_defaults():
    def varargs():
        @sparse_kernel
        def k(A: csr, *xs) -> dense:  # ERR
            y[i] = A[i, j]
            return y

    def default():
        @sparse_kernel
        def k(A: csr, x: dense = None) -> dense:  # ERR
            y[i] = A[i, j] * x[j]
            return y
    _raises_at(varargs, "*@xs", "*args and **kwargs are not allowed", varargs)
    _raises_at(default, "= @None", "no default values", default)


def test_py_keyword_only_parameters_are_operands():
    @sparse_kernel
    def k(A: csr, *, x: dense) -> dense:
        y[i] = A[i, j] * x[j]
        return y

    np.testing.assert_allclose(k(A=np.eye(3) * 2, x=np.arange(3.0)), [0, 2, 4])


def test_py_result_written_into_an_input():
    def build():
        @sparse_kernel
        def k(x: dense) -> dense:
            x[i] = x[i] * 2
            return x  # ERR
    _raises_at(test_py_result_written_into_an_input, "@return x", "'x' is an input of the kernel and cannot be "
               "its output", build)


def test_one_liner_result_written_into_an_operand():
    with pytest.raises(DSLError) as ei:
        sparsedsl.compute("x[i] = x[i] * 2", x=np.ones(3))
    assert "'x' is an operand of this expression and cannot also be its result" in ei.value.message
    assert_points_at(ei.value, 1, 1, "x[i]")


def test_text_result_written_into_an_input():
    text, line, col = at_marker("kernel k(x: dense) -> @x: dense {\n  x[i] = x[i] * 2\n}\n")
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert "'x' is an input of the kernel and cannot also be its output" in ei.value.message
    assert_points_at(ei.value, line, col, "x")


def test_text_kernel_defined_twice():
    body = "(A: csr) -> y: dense {\n  y[i] = A[i,j]\n}\n"
    text, line, col = at_marker(f"kernel k{body}kernel @k{body}")
    with pytest.raises(DSLError) as ei:
        parse_source(text)
    assert "'k' is defined twice: first as the kernel at line 1" in ei.value.message
    assert_points_at(ei.value, line, col, "k")
    text, line, col = at_marker(f"format k = (i, j) -> (i: dense, j: compressed)\nkernel @k{body}")
    with pytest.raises(DSLError, match="first as the format at line 1"):
        parse_source(text)


def test_sparse_kernel_with_parentheses_and_options():
    @sparse_kernel()
    def spmv(A: csr, x: dense) -> dense:
        y[i] = A[i, j] * x[j]
        return y

    @sparse_kernel(schedule={"workspace": "hash"})
    def spgemm(A: csr, B: csr) -> csr:
        C[i, j] = A[i, k] * B[k, j]
        return C

    Ad = np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 0]])
    assert isinstance(spmv, sparsedsl.Kernel) and spgemm.schedule == {"workspace": "hash"}
    np.testing.assert_allclose(spmv(A=Ad, x=np.ones(3)), Ad @ np.ones(3))
    np.testing.assert_allclose(spgemm(A=Ad, B=Ad).to_numpy(), Ad @ Ad)
    assert sparse_kernel(spmv) is spmv  # decorating a kernel again changes nothing
    assert sparse_kernel(spmv, schedule={"workspace": "dense"}).schedule == {"workspace": "dense"}


@pytest.mark.parametrize("obj", [None, 3, int, "y[i] = A[i,j]"], ids=["none", "int", "class", "string"])
def test_sparse_kernel_of_a_non_function(obj):
    with pytest.raises(DSLError, match="@sparse_kernel decorates a function"):
        sparse_kernel(obj) if obj is not None else sparse_kernel(None)(obj)


@pytest.mark.parametrize("name", ["expr", "backend", "out_format", "name", "schedule", "operands", "self"])
def test_an_operand_may_be_named_like_an_option(name):
    rng = np.random.default_rng(1)
    Ad, x = rng.random((4, 3)), rng.random(3)
    expr = f"y[i] = {name}[i,j] * x[j]"
    np.testing.assert_allclose(sparsedsl.compute(expr, {name: Ad, "x": x}), Ad @ x)
    np.testing.assert_allclose(sparsedsl.compute(expr, {name: Ad}, x=x, backend="cpu"), Ad @ x)
    if name not in ("backend", "out_format"):  # options of compute(); the others are free keywords
        np.testing.assert_allclose(sparsedsl.compute(expr, **{name: Ad, "x": x}), Ad @ x)
    k = sparsedsl.compile(expr, {name: "csr"}, name="mine")
    assert k.name == "mine" and k.program.params[0].format == "csr"
    np.testing.assert_allclose(k({name: Ad, "x": x}), Ad @ x)
    np.testing.assert_allclose(k(Ad, x), Ad @ x)
    if name not in ("backend",):
        np.testing.assert_allclose(k(**{name: Ad, "x": x}), Ad @ x)


def test_an_option_given_an_operand_says_where_operands_go():
    Ad, x = np.eye(3), np.ones(3)
    with pytest.raises(ValueError, match=r"backend must be 'cpu' or 'cuda', got an object of type ndarray.*dict"):
        sparsedsl.compute("y[i] = backend[i,j] * x[j]", backend=Ad, x=x)
    with pytest.raises(DSLError, match=r"out_format must be a format name.*dict of operands"):
        sparsedsl.compute("y[i] = out_format[i,j] * x[j]", out_format=Ad, x=x)
    with pytest.raises(DSLError, match="operand 'x' is given twice"):
        sparsedsl.compute("y[i] = A[i,j] * x[j]", {"A": Ad, "x": x}, x=x)
    with pytest.raises(TypeError, match="compile\\(\\)'s second argument is a dict of operand formats"):
        sparsedsl.compile("y[i] = A[i,j] * x[j]", "csr")


# =================================================================================================
# The command line, sparsedsl.load, the kernel cache directory (issue 13)
# =================================================================================================

GOOD_SDSL = ("format blocked = (i, j) -> (i / 2: dense, j / 2: compressed, i % 2: dense, j % 2: dense)\n\n"
             "kernel spmv(A: csr, x: dense) -> y: dense {\n  y[i] = A[i,j] * x[j]\n}\n\n"
             "kernel softmax(S: csr) -> P: csr {\n  let m[i] = max[j](S[i,j])\n"
             "  let e[i,j] = mask(S[i,j], exp(S[i,j] - m[i]))\n  let z[i] = e[i,j]\n  P[i,j] = e[i,j] / z[i]\n}\n")


def _run_cli(capsys, *argv):
    from sparsedsl import cli

    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_cli_run_lists_and_checks_every_kernel(tmp_path, capsys):
    path = tmp_path / "good.sdsl"
    path.write_text(GOOD_SDSL)
    rc, out, err = _run_cli(capsys, "run", str(path))
    assert rc == 0 and err == ""
    assert "format blocked" in out and "kernel spmv(A: csr, x: dense) -> y: dense" in out and "checked" in out
    assert "kernel softmax" in out


@pytest.mark.parametrize("case", ["type-error", "syntax-error", "format-typo", "defined-twice"])
def test_cli_run_reports_a_bad_kernel_at_file_line_col(tmp_path, capsys, case):
    text = {"type-error": "kernel k(A: csr, x: dense) -> y: dense {\n  y[i] = A[i,j] * @foo(x[j])\n}\n",
            "syntax-error": "kernel k(A: csr @x: dense) -> y: dense {\n  y[i] = A[i,j] * x[j]\n}\n",
            "format-typo": "kernel k(@A: csrr, x: dense) -> y: dense {\n  y[i] = A[i,j] * x[j]\n}\n",
            "defined-twice": GOOD_SDSL + "kernel @spmv(A: csr) -> y: dense {\n  y[i] = A[i,j]\n}\n"}[case]
    text, line, col = at_marker(text)
    path = tmp_path / "bad.sdsl"
    path.write_text(text)
    rc, out, err = _run_cli(capsys, "run", str(path))
    assert rc != 0 and out == ""
    assert err.startswith(f"{path}:{line}:{col}: error: "), err
    assert err.rstrip().split("\n")[-1].strip().startswith("^"), err  # the caret under the source line
    for bad in ("lower.py", "check.py", "syntax.py", "compiler.py", "lark"):
        assert bad not in err


def test_cli_run_on_files_that_are_not_sdsl_text(tmp_path, capsys):
    (tmp_path / "bin.sdsl").write_bytes(b"kernel k(A: csr) -> y: dense {\n  y[i] = \x00\x01\x02\n}\n")
    (tmp_path / "latin1.sdsl").write_bytes("kernel k(A: csr) -> y: dense {\n  y[i] = A[i,j] # é\n}\n".encode("latin-1"))
    cases = {str(tmp_path / "missing.sdsl"): "No such file or directory", str(tmp_path): "Is a directory",
             str(tmp_path / "bin.sdsl"): ":2:10: error: ", str(tmp_path / "latin1.sdsl"): ":2:19: error: "}
    for path, needle in cases.items():
        rc, out, err = _run_cli(capsys, "run", path)
        assert rc != 0 and out == "" and needle in err and err.startswith(path), (path, err)
        if path.endswith("bin.sdsl") or path.endswith("latin1.sdsl"):
            assert "is not a text file: byte" in err


def test_cli_exit_status_in_a_fresh_process(tmp_path):
    path = tmp_path / "bad.sdsl"
    path.write_text("kernel k(A: csr, x: dense) -> y: dense {\n  y[i] = A[i,j] * nope(x[j])\n}\n")
    p = subprocess.run([sys.executable, "-m", "sparsedsl.cli", "run", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and f"{path}:2:19: error: unknown function 'nope'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_load_gives_the_kernels_and_formats_as_attributes(tmp_path):
    path = tmp_path / "lib.sdsl"
    path.write_text(GOOD_SDSL)
    lib = sparsedsl.load(path)
    S = sp.random(6, 6, density=0.5, format="csr", random_state=3)
    x = np.arange(6.0)
    np.testing.assert_allclose(lib.spmv(A=S, x=x), S @ x)
    P = lib.softmax(S=sparsedsl.asformat(S, "csr")).to_numpy()
    dense = S.toarray()
    for r in range(6):
        nz = dense[r] != 0
        if nz.any():
            e = np.exp(dense[r, nz] - dense[r, nz].max())
            np.testing.assert_allclose(P[r, nz], e / e.sum())
    assert sparsedsl.asformat(np.eye(4), lib.blocked).format == lib.blocked
    with pytest.raises(AttributeError, match="defines no kernel or format 'softmx'; did you mean 'softmax'"):
        _ = lib.softmx
    assert lib.__file__ == str(path)


def test_load_reports_the_first_bad_kernel_with_the_file_name(tmp_path):
    path = tmp_path / "bad.sdsl"
    text, line, col = at_marker(GOOD_SDSL + "kernel k(A: csr) -> y: dense {\n  y[i] = @B[i,j]\n}\n")
    path.write_text(text)
    with pytest.raises(DSLError) as ei:
        sparsedsl.load(path)
    assert ei.value.span.file == str(path)
    assert_points_at(ei.value, line, col, "B[i,j]")
    with pytest.raises(FileNotFoundError):
        sparsedsl.load(tmp_path / "missing.sdsl")


def test_an_unwritable_cache_directory_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    from sparsedsl.backends import cache

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SPARSEDSL_CACHE_DIR", str(blocker / "cache"))  # under a file: never creatable
    with pytest.warns(RuntimeWarning, match=r"cannot write its kernel cache at .*a-file/cache.*SPARSEDSL_CACHE_DIR"):
        path = cache.cache_dir()
    assert path.is_dir() and os.access(path, os.W_OK) and not str(path).startswith(str(blocker))
    assert cache.cache_dir() == path  # warned once, then the same directory


def test_a_kernel_compiles_with_an_unwritable_cache_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    child = ("import numpy as np, sparsedsl as sd\n"
             "print(sd.compute('y[i] = A[i,j] * x[j] * 3', A=np.eye(3), x=np.ones(3)).tolist())\n")
    env = {**os.environ, "SPARSEDSL_CACHE_DIR": str(blocker / "cache")}
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[3.0, 3.0, 3.0]"
    assert "RuntimeWarning: sparsedsl cannot write its kernel cache" in p.stderr and "Traceback" not in p.stderr


# =================================================================================================
# Memory safety: storage changed behind a tensor's back, and the bounds-checked debug mode (issue 13)
# =================================================================================================

MUTATED_STORAGE_CHILD = """
import sys
import numpy as np, scipy.sparse as sp, sparsedsl as sd
m = sp.random(300, 300, density=0.02, format="csr", random_state=0)
A = sd.asformat(m, "csr")  # no copy: A reads m's arrays, through read-only views
x = np.ones(300)
k = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
np.testing.assert_allclose(k(A=A, x=x), m @ x)  # compiled and run, in the mode the process started in
if sys.argv[1] == "config":
    assert sd.config(check="bounds") == {"check": "none"}
m.indices[5] = 10**9  # changed through the writable original, after A was validated
m.indptr[-2] = m.indptr[-1] + 10**7
try:
    k(A=A, x=x)
    print("no error")
except IndexError as e:
    print("IndexError:", e)
"""


@pytest.mark.parametrize("how", ["config", "env"])
def test_bounds_checked_kernels_raise_index_error_on_storage_changed_after_validation(how):
    # without checks this read far out of bounds (a segfault); checked, it is an IndexError
    env = {**os.environ, "SPARSEDSL_CHECK": "bounds" if how == "env" else "none"}
    p = subprocess.run([sys.executable, "-c", MUTATED_STORAGE_CHILD, how], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])  # negative: killed by a signal
    assert p.stdout.strip() == "IndexError: index is out of bounds", p.stdout + p.stderr[-2000:]


def test_config_check_option():
    with pytest.raises(ValueError, match="check must be one of 'none', 'bounds', got 'bound'"):
        sparsedsl.config(check="bound")
    k = sparsedsl.compile("y[i] = A[i,j] * x[j] * 2", A="csr")
    A, x = sparsedsl.asformat(np.eye(3), "csr"), np.ones(3)
    old = sparsedsl.config(check="none")  # (the suite may run under SPARSEDSL_CHECK=bounds)
    try:
        assert sparsedsl.config() == {"check": "none"}
        assert "boundscheck=False" in sparsedsl.explain(k, A=A, x=x)
        assert sparsedsl.config(check="bounds") == {"check": "none"}
        assert "boundscheck=True" in sparsedsl.explain(k, A=A, x=x)  # replanned: a kernel of its own
        np.testing.assert_allclose(k(A=A, x=x), 2 * x)
        sparsedsl.config(check="none")
        assert "boundscheck=False" in sparsedsl.explain(k, A=A, x=x)
    finally:
        sparsedsl.config(**old)
