"""What the REPL prints: values in a line or a few, pipeline stages as index notation, and
``:spy``'s terminal density plot."""

from __future__ import annotations

import importlib

import numpy as np

from ..roofline import fmt_bytes, fmt_time

# ---- values ----------------------------------------------------------------------------------------

def describe(value, names: dict | None = None) -> str:
    """One line: kind, shape, format (by its declared name when ``names`` maps it to one), dtype, nnz / bytes."""
    if _is_tensor(value):
        density = value.nnz / value.size if value.size else 0.0
        fmt = (names or {}).get(value.format, value.format)
        return (f"{fmt} {_shape(value.shape)} {value.dtype}, nnz {value.nnz:,} (density {density:.3g}), "
                f"{fmt_bytes(value.nbytes)}")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return f"{value.dtype} scalar {value[()]!r}"
        return f"dense {_shape(value.shape)} {value.dtype}, {fmt_bytes(value.nbytes)}"
    if isinstance(value, tuple):
        return f"{len(value)} outputs: " + "; ".join(describe(v, names) for v in value)
    return f"{type(value).__name__} {value!r}"


def show(value, entries: int = 6, names: dict | None = None) -> str:
    """``describe`` and then a few entries (the first ones of a large value)."""
    head = describe(value, names)
    if _is_tensor(value):
        coords, vals = value.coordinates()
        n = len(vals)
        lines = [f"  {tuple(int(c) for c in coords[:, q])}  {vals[q]:.6g}" if vals.dtype.kind == "f" else
                 f"  {tuple(int(c) for c in coords[:, q])}  {vals[q]}" for q in range(min(n, entries))]
        if n > entries:
            lines.append(f"  ... {n - entries:,} more")
        return "\n".join([head] + lines)
    if isinstance(value, np.ndarray) and value.ndim > 0:
        body = np.array2string(value, threshold=2 * entries, edgeitems=entries // 2, precision=5,
                               max_line_width=100)
        return head + "\n" + "\n".join("  " + ln for ln in body.splitlines())
    if isinstance(value, tuple):
        return "\n".join(show(v, entries, names) for v in value)
    return head


def _is_tensor(value) -> bool:
    return hasattr(value, "format") and hasattr(value, "nnz") and hasattr(value, "levels")


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape) if shape else "scalar"


def timing(seconds: float) -> str:
    return fmt_time(seconds)


# ---- pipeline stages ---------------------------------------------------------------------------------

REDUCE_NAMES = {"+": "sum", "or": "any", "and": "all"}


def notation(node) -> str:
    """Index notation of an AST node (duck-typed: accesses, literals, operators, calls, reductions)."""
    kind = type(node).__name__
    if kind == "Access":
        return f"{node.tensor}[{','.join(ix.name for ix in node.indices)}]"
    if kind == "Literal":
        return repr(node.value).lower() if isinstance(node.value, bool) else repr(node.value)
    if kind == "Scalar":
        return node.name
    if kind == "BinOp":
        return f"({notation(node.left)} {node.op} {notation(node.right)})"
    if kind == "Neg":
        return f"-{notation(node.operand)}"
    if kind == "Call":
        return f"{node.fn}({', '.join(notation(a) for a in node.args)})"
    if kind == "Reduce":
        return f"{node.op}[{','.join(ix.name for ix in node.indices)}]({unparen(notation(node.body))})"
    return repr(node)


def unparen(text: str) -> str:
    if text.startswith("(") and text.endswith(")"):
        depth = 0
        for k, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and k < len(text) - 1:
                return text
        return text[1:-1]
    return text


def checked_listing(checked) -> str:
    """The checked (or rewritten) program: every tensor's type, then each statement with its
    reduction made explicit (where the implicit sums bind)."""
    lines = ["types:"]
    for name, t in checked.types.items():
        role = ("input" if name in checked.inputs else "output" if name in checked.outputs else "temporary")
        kind = getattr(t, "kind", "")
        lines.append(f"  {name:<8} {role:<9} {kind + ' ' if kind else ''}{t.format} {_shape(t.shape)} {t.dtype}")
    for name, dt in checked.scalars.items():
        lines.append(f"  {name:<8} scalar    {dt}")
    lines.append("statements:")
    for st in checked.statements:
        body = unparen(notation(st.value))
        if st.reduce_indices:
            op = REDUCE_NAMES.get(st.reduce_op, st.reduce_op)
            if st.mul_op != "*":
                op = f"{op} (product: {st.mul_op})"
            body = f"{op}[{','.join(st.reduce_indices)}]({body})"
        lines.append(f"  {notation(st.target)} {'+=' if st.accumulate else '='} {body}")
    for note in getattr(checked, "notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def loops_listing(functions: list, statement_notes: list) -> str:
    """The loop IR of each statement, through the loop IR's own ``dump`` (found from the IR's
    module, so this keeps working wherever that module lives)."""
    parts = []
    for fn, notes in zip(functions, statement_notes):
        parts += notes
        module = importlib.import_module(type(fn).__module__)
        dump, wrap = getattr(module, "dump", None), getattr(module, "Module", None)
        parts.append(dump(wrap([fn], fn.name)) if dump and wrap else repr(fn))
    return "\n".join(parts)


# ---- :spy ----------------------------------------------------------------------------------------------

RAMP = " .:-=+*#%@"


def spy(value, width: int = 64, height: int = 24) -> str:
    """A density plot of a matrix's stored entries: each character cell counts the entries of the
    block of the matrix it covers, shaded from ' ' (none) to '@' (the fullest cell). Any size: the
    coordinates are binned, nothing dense is built."""
    if _is_tensor(value):
        coords, _ = value.coordinates()
        shape = value.shape
    else:
        arr = np.asarray(value)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        coords, shape = np.array(np.nonzero(arr)), arr.shape
    if len(shape) != 2:
        raise ValueError(f":spy draws matrices; this value is {len(shape)}-D")
    rows, cols = shape
    h, w = max(1, min(height, rows)), max(1, min(width, cols))
    r = (coords[0] * h // max(rows, 1)).astype(np.int64)
    c = (coords[1] * w // max(cols, 1)).astype(np.int64)
    counts = np.bincount(r * w + c, minlength=h * w).reshape(h, w)
    cell_r, cell_c = -(-rows // h), -(-cols // w)
    fill = counts / float(cell_r * cell_c)
    top = fill.max()
    levels = np.where(counts > 0, 1 + np.floor((len(RAMP) - 2) * fill / top).astype(int), 0) if top > 0 else counts
    lines = [f"{rows} x {cols}, {coords.shape[1]:,} stored; one cell = {cell_r} x {cell_c} entries, "
             f"'@' = {top:.3g} full"]
    lines.append("+" + "-" * w + "+")
    lines += ["|" + "".join(RAMP[v] for v in row) + "|" for row in levels]
    lines.append("+" + "-" * w + "+")
    return "\n".join(lines)
