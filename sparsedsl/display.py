"""Rich notebook display (``_repr_html_``) for tensors, kernels and bench/advise results: a small spy image
(a PNG made with numpy and zlib, inlined as base64) beside a format summary, a kernel's signature with its
``explain`` output, and a table with a roofline bar. numpy only at import: no IPython, no matplotlib."""

from __future__ import annotations

import base64
import html
import struct
import zlib

import numpy as np

SPY_PIXELS = 96          # the longer side of a tensor's thumbnail
SAMPLE_EXTENT = 24       # the extent of every index of the sample operands a kernel is explained on


# ---- PNG ------------------------------------------------------------------------------------------

def png(rgb: np.ndarray) -> bytes:
    """An (h, w, 3) uint8 image as PNG bytes (filter 0 on every row, zlib-compressed)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def spy_counts(coords: np.ndarray, shape, pixels: int = SPY_PIXELS) -> np.ndarray:
    """Stored entries per pixel of a (rows, cols) matrix whose entries sit at ``coords`` (2, n)."""
    rows, cols = shape
    scale = min(1.0, pixels / max(rows, cols, 1))
    h, w = max(1, min(rows, round(rows * scale))), max(1, min(cols, round(cols * scale)))
    r = coords[0].astype(np.int64) * h // max(rows, 1)
    c = coords[1].astype(np.int64) * w // max(cols, 1)
    return np.bincount(r * w + c, minlength=h * w).reshape(h, w).astype(np.float64)


def spy_png(counts: np.ndarray, upscale_to: int = SPY_PIXELS) -> bytes:
    """Counts per pixel shaded white (none) to dark blue (the fullest), scaled up by a whole factor."""
    top = counts.max() if counts.size else 0.0
    t = np.sqrt(counts / top) if top > 0 else counts
    light, dark = np.array([222, 235, 247], float), np.array([8, 48, 107], float)
    rgb = np.where(counts[..., None] > 0, light + t[..., None] * (dark - light), 255.0).astype(np.uint8)
    k = max(1, upscale_to // max(counts.shape))
    return png(np.repeat(np.repeat(rgb, k, axis=0), k, axis=1))


def _img(data: bytes, title: str) -> str:
    return (f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' alt='{html.escape(title)}' "
            f"title='{html.escape(title)}' style='image-rendering:pixelated;border:1px solid #ccc'/>")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


# ---- tensors ---------------------------------------------------------------------------------------

def tensor_html(tensor) -> str:
    """A SparseTensor as HTML: the spy image of a 2-D tensor (of each slice's union above 2-D) and a table of
    shape, format, dtype, nnz, density, bytes and device."""
    rows = [("shape", " x ".join(str(s) for s in tensor.shape)), ("format", str(tensor.format)),
            ("dtype", str(tensor.dtype)), ("nnz", f"{tensor.nnz:,}"),
            ("density", f"{tensor.nnz / tensor.size:.3g}" if tensor.size else "-"),
            ("bytes", _human(tensor.nbytes)), ("device", tensor.device)]
    table = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    image = ""
    if tensor.ndim >= 2 and tensor.size:
        coords, _ = tensor.coordinates()
        counts = spy_counts(coords[-2:], tensor.shape[-2:])
        image = _img(spy_png(counts), f"stored entries per pixel; one pixel = "
                                      f"{-(-tensor.shape[-2] // counts.shape[0])} x "
                                      f"{-(-tensor.shape[-1] // counts.shape[1])} entries")
    return (f"<div class='sparsedsl-tensor' style='display:flex;gap:12px;align-items:flex-start'>{image}"
            f"<table><caption style='text-align:left'><b>SparseTensor</b></caption>{table}</table></div>")


# ---- kernels ---------------------------------------------------------------------------------------

def _accesses(node, found: dict) -> dict:
    """tensor name -> number of indices, over every Access in a program's statements (duck-typed AST)."""
    if type(node).__name__ == "Access":
        found.setdefault(node.tensor, len(node.indices))
    fields = getattr(node, "__dataclass_fields__", None)
    children = [getattr(node, f) for f in fields] if fields else (node if isinstance(node, list | tuple) else [])
    for child in children:
        if hasattr(child, "__dataclass_fields__") or isinstance(child, list | tuple):
            _accesses(child, found)
    return found


def sample_operands(kernel) -> dict:
    """Small operands for each parameter of ``kernel``: every index of extent SAMPLE_EXTENT (divisible by the
    block sizes 2, 3, 4, 8), sparse ones random at density 0.2 in their declared format, scalars 1.0."""
    import sparsedsl as sd

    ndims = _accesses(list(kernel.program.statements), {})
    out = {}
    for k, p in enumerate(kernel.program.params):
        if p.kind == "scalar":
            out[p.name] = 1.0
            continue
        shape = (SAMPLE_EXTENT,) * ndims.get(p.name, 1)
        if str(p.format) == "dense" or (hasattr(p.format, "is_dense") and p.format.is_dense):
            out[p.name] = np.random.default_rng(k).random(shape)
        else:
            out[p.name] = sd.random(shape, 0.2, format=p.format, seed=k)
    return out


def kernel_html(kernel) -> str:
    """A kernel's signature, its statements, and ``explain`` on small sample operands."""
    import sparsedsl as sd

    source = getattr(kernel.program.span, "text", "") or ""
    try:
        explained = sd.explain(kernel, **sample_operands(kernel))
        note = f"explain on sample operands (every index of extent {SAMPLE_EXTENT}):"
    except Exception as e:  # a repr must not raise: say why and how to get it
        explained, note = f"{type(e).__name__}: {e}", "explain needs real operands: sd.explain(kernel, A=..., ...)"
    return (f"<div class='sparsedsl-kernel'><b>{html.escape(repr(kernel))}</b>"
            + (f"<pre style='margin:4px 0'>{html.escape(source)}</pre>" if source else "")
            + f"<details><summary>{html.escape(note)}</summary><pre>{html.escape(explained)}</pre></details></div>")


# ---- bench and advise results -----------------------------------------------------------------------

def roofline_bar(fraction: float, label: str = "", width: int = 160) -> str:
    """An inline bar: the achieved share of the machine's copy bandwidth (1.0 = as fast as a memcpy)."""
    f = max(0.0, min(1.0, float(fraction)))
    return (f"<span title='{html.escape(label or f'{fraction:.0%} of copy bandwidth')}' style='display:inline-block;"
            f"width:{width}px;height:10px;background:#eee;border:1px solid #bbb;vertical-align:middle'>"
            f"<span style='display:block;width:{f * 100:.1f}%;height:100%;background:#3a76b0'></span></span>"
            f" {fraction:.0%}")


def bench_html(result) -> str:
    """``sd.bench``'s result: its rows and a roofline bar (share of copy bandwidth at the median time)."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                   f"{html.escape(v)}</td></tr>" for k, v in result.rows())
    bar = roofline_bar(result.copy_fraction, f"{result.gbs:.2f} GB/s of {result.copy_gbs:.1f} GB/s copy")
    return (f"<table><caption>bench {html.escape(result.kernel)} on {html.escape(result.backend)}</caption>{body}"
            f"<tr><th style='text-align:left'>roofline</th><td style='text-align:left'>{bar}</td></tr></table>")


def advise_html(advice) -> str:
    """``sd.advise``'s result: its table with a roofline bar per measured format, and the recommendation."""
    rows = advice.table()
    head = "".join(f"<th>{html.escape(v)}</th>" for v in rows[0] + ["roofline"])
    body = []
    for c, r in zip(advice.candidates, rows[1:]):
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in r)
        if c.median is not None:
            gbs = c.bytes_moved / c.median / 1e9
            cells += f"<td>{roofline_bar(gbs / advice.copy_gbs, width=100)}</td>"
        else:
            cells += f"<td colspan={len(rows[0]) + 1 - len(r)}></td>"
        body.append(f"<tr>{cells}</tr>")
    cap = html.escape(f"advise {advice.kernel}: {advice.operand} {advice.shape}, nnz {advice.nnz:,}")
    return (f"<table><caption>{cap}</caption><tr>{head}</tr>{''.join(body)}</table>"
            f"<p><b>recommended: {html.escape(str(advice.recommended))}</b> - {html.escape(advice.reason)}</p>")
