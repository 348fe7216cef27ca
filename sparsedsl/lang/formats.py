"""Formats as levels: an ordered list of levels plus a map from tensor dimensions to levels.

The textual spelling is ``(i, j) -> (i: dense, j: compressed)``. A level's coordinate is a
dimension (``i``), a block index (``i / 4``) or an in-block offset (``i % 4``), so blocked formats
(BSR, blocked bitmap) are declared, not coded. Named formats (``"csr"``, ``"bsr(4,4)"``,
``"nm(2,4)"``...) are spellings of the same values. Formats are frozen and hashable: cache keys.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import FormatError
from .levels import NM, Bitmap, Compressed, Dense, LevelType, Singleton


@dataclass(frozen=True)
class LevelSpec:
    """One level: which dimension it stores, how (plain, block index ``/``, in-block ``%``), its type."""

    dim: int
    type: LevelType
    op: str | None = None  # None, "/" or "%"
    block: int = 1

    def extent(self, shape: tuple[int, ...]) -> int:
        n = shape[self.dim]
        if self.op == "/":
            return -(-n // self.block)
        return self.block if self.op == "%" else n

    def spelling(self, names) -> str:
        coord = names[self.dim] if self.op is None else f"{names[self.dim]} {self.op} {self.block}"
        return f"{coord}: {self.type.spelling()}"


@dataclass(frozen=True)
class Format:
    ndim: int
    levels: tuple[LevelSpec, ...]
    name: str | None = None

    def __post_init__(self):
        seen: dict[int, list[LevelSpec]] = {}
        for lv in self.levels:
            if not 0 <= lv.dim < self.ndim:
                raise FormatError(f"level dimension {lv.dim} is outside a {self.ndim}-D format")
            if lv.op is not None and lv.block < 1:
                raise FormatError(f"block size must be a positive integer, got {lv.block}")
            seen.setdefault(lv.dim, []).append(lv)
        for d in range(self.ndim):
            ops = sorted((lv.op or "") for lv in seen.get(d, []))
            if ops not in ([""], ["%", "/"]):
                raise FormatError(f"dimension {d} must be stored by one plain level or by a '/' and a '%' "
                                  f"level of the same block size; got {ops or 'no level'}")
            if ops == ["%", "/"]:
                a, b = seen[d]
                if a.block != b.block:
                    raise FormatError(f"dimension {d}: '/' and '%' levels must use the same block size, "
                                      f"got {a.block} and {b.block}")
                if [lv.op for lv in self.levels if lv.dim == d] != ["/", "%"]:
                    raise FormatError(f"dimension {d}: the block index level ('/') must come before the "
                                      f"in-block level ('%')")
        for prev, lv in zip(self.levels, self.levels[1:]):
            if not prev.type.unique and not lv.type.takes_segment:
                raise FormatError(f"a {lv.type.spelling()} level cannot follow the non-unique "
                                  f"{prev.type.spelling()} level; use singleton levels after it (coo)")
            if lv.type.takes_segment and prev.type.unique:
                raise FormatError(f"a singleton level must follow a non-unique level, not "
                                  f"{prev.type.spelling()}")
        if self.levels and self.levels[0].type.takes_segment:
            raise FormatError("a singleton level cannot be the first level")

    # ---- properties the compiler asks for ----------------------------------------------
    @functools.cached_property
    def is_dense(self) -> bool:
        return all(isinstance(lv.type, Dense) and lv.op is None for lv in self.levels) and \
            [lv.dim for lv in self.levels] == list(range(self.ndim))

    @property
    def blocks(self) -> dict[int, int]:
        """Block size of each blocked dimension."""
        return {lv.dim: lv.block for lv in self.levels if lv.op == "/"}

    @property
    def dim_order(self) -> list[int]:
        """Dimensions in the order their first level appears."""
        out: list[int] = []
        for lv in self.levels:
            if lv.dim not in out:
                out.append(lv.dim)
        return out

    def permuted(self, order: list[int]) -> Format:
        """The same level types storing the dimensions in another order (csr -> csc)."""
        slots = {d: [lv for lv in self.levels if lv.dim == d] for d in range(self.ndim)}
        by_old = self.dim_order
        levels = []
        for new_d, old_d in zip(order, by_old):
            for lv in slots[old_d]:
                levels.append(LevelSpec(new_d, lv.type, lv.op, lv.block))
        return Format(self.ndim, tuple(levels))

    def unblocked(self) -> Format:
        """The same level types over whole dimensions: each block-index level ('/') stands for its
        dimension and the in-block levels ('%') go (bsr -> csr, blocked_bitmap -> bitmap)."""
        return Format(self.ndim, tuple(LevelSpec(lv.dim, lv.type) for lv in self.levels if lv.op != "%"))

    def spelling(self) -> str:
        names = _INDEX_NAMES[: self.ndim]
        return f"({', '.join(names)}) -> ({', '.join(lv.spelling(names) for lv in self.levels)})"

    def __str__(self) -> str:
        return self.name or self.spelling()

    def __repr__(self) -> str:
        return f"Format({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, Format) and (self.ndim, self.levels) == (other.ndim, other.levels)

    def __hash__(self):
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = hash((self.ndim, self.levels))
        return h


_INDEX_NAMES = ["i", "j", "k", "l", "m", "n", "o", "p"]


# ---- named formats --------------------------------------------------------------------------


def _plain(ndim, types, order=None, name=None):
    order = order or list(range(ndim))
    return Format(ndim, tuple(LevelSpec(d, t) for d, t in zip(order, types)), name)


def dense(ndim: int = 2) -> Format:
    return _plain(ndim, [Dense()] * ndim, name="dense")


def csr() -> Format:
    return _plain(2, [Dense(), Compressed()], name="csr")


def csc() -> Format:
    return _plain(2, [Dense(), Compressed()], order=[1, 0], name="csc")


def dcsr() -> Format:
    return _plain(2, [Compressed(), Compressed()], name="dcsr")


def csf(ndim: int = 3) -> Format:
    return _plain(ndim, [Compressed()] * ndim, name="csf")


def coo(ndim: int = 2) -> Format:
    if ndim == 1:
        return _plain(1, [Compressed()], name="coo")
    types = [Compressed(unique=False)] + [Singleton(unique=False)] * (ndim - 2) + [Singleton()]
    return _plain(ndim, types, name="coo")


def sparse_vector() -> Format:
    return _plain(1, [Compressed()], name="sparse")


def bitmap(ndim: int = 2) -> Format:
    return _plain(ndim, [Dense()] * (ndim - 1) + [Bitmap()], name="bitmap")


def nm(n: int, m: int, axis: int = -1, ndim: int = 2) -> Format:
    axis = axis % ndim
    order = [d for d in range(ndim) if d != axis] + [axis]
    name = f"nm({n},{m})" if axis == ndim - 1 else f"nm({n},{m},axis={axis})"
    return _plain(ndim, [Dense()] * (ndim - 1) + [NM(n, m)], order=order, name=name)


def _blocked(inner_type, r, c, name):
    for v in (r, c):
        if not (isinstance(v, int) and v >= 1):
            raise FormatError(f"the block shape of {name}() must be two positive ints, got ({r}, {c})")
    return Format(2, (LevelSpec(0, Dense(), "/", r), LevelSpec(1, inner_type, "/", c),
                      LevelSpec(0, Dense(), "%", r), LevelSpec(1, Dense(), "%", c)), f"{name}({r},{c})")


def bsr(r: int, c: int) -> Format:
    return _blocked(Compressed(), r, c, "bsr")


def blocked_bitmap(r: int, c: int) -> Format:
    return _blocked(Bitmap(), r, c, "blocked_bitmap")


_NAMED = {
    "dense": dense, "csr": csr, "csc": csc, "dcsr": dcsr, "csf": csf, "coo": coo, "bitmap": bitmap,
    "sparse": sparse_vector, "nm": nm, "bsr": bsr, "blocked_bitmap": blocked_bitmap,
}
_TAKES_NDIM = {"dense", "csf", "coo", "bitmap"}
NAMED_FORMATS = tuple(_NAMED)


def as_format(spec, ndim: int | None = None) -> Format:
    """A Format from a Format, a name (``"csr"``, ``"bsr(4,4)"``, ``"nm(2,4)"``) or a spelling."""
    if isinstance(spec, Format):
        if ndim is not None and spec.ndim != ndim:
            raise FormatError(f"format {spec} is {spec.ndim}-D but the tensor is {ndim}-D")
        return spec
    if not isinstance(spec, str):
        raise FormatError(f"a format must be a name such as 'csr' or a Format, got {type(spec).__name__}")
    return _format_from_text(spec, ndim)


@functools.lru_cache(maxsize=512)
def _format_from_text(spec: str, ndim: int | None) -> Format:
    text = spec.strip()
    if "->" in text:
        fmt = parse_format(text)
    else:
        m = re.fullmatch(r"([a-z_]+)\s*(?:\((.*)\))?", text)
        if not m or m.group(1) not in _NAMED:
            raise FormatError(f"unknown format {spec!r}; named formats are {', '.join(NAMED_FORMATS)}, or "
                              f"spell one as '(i, j) -> (i: dense, j: compressed)'")
        name, args = m.group(1), _parse_args(m.group(2) or "", spec)
        if name in _TAKES_NDIM and ndim is not None and "ndim" not in args[1]:
            args[1]["ndim"] = ndim
        if name == "nm" and ndim is not None:
            args[1]["ndim"] = ndim
        if name == "csr" and ndim == 1:
            name = "sparse"
        try:
            fmt = _NAMED[name](*args[0], **args[1])
        except TypeError as exc:
            raise FormatError(f"bad arguments in format {spec!r}: {exc}") from None
    if ndim is not None and fmt.ndim != ndim:
        raise FormatError(f"format {spec!r} is {fmt.ndim}-D but the tensor is {ndim}-D")
    return fmt


def _parse_args(text: str, spec: str):
    pos, kw = [], {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, val = part.partition("=")
        try:
            value = int(val if eq else key)
        except ValueError:
            raise FormatError(f"format arguments must be integers, got {part!r} in {spec!r}") from None
        if eq:
            kw[key.strip()] = value
        else:
            pos.append(value)
    return pos, kw


_LEVEL_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:([/%])\s*(\d+))?\s*:\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*")


def parse_format(text: str) -> Format:
    """Parse ``(i, j) -> (i / 4: dense, j / 4: compressed, i % 4: dense, j % 4: dense)``."""
    m = re.fullmatch(r"\s*\(([^)]*)\)\s*->\s*\((.*)\)\s*", text, re.S)
    if not m:
        raise FormatError(f"a format spelling looks like '(i, j) -> (i: dense, j: compressed)', got {text!r}")
    dims = [d.strip() for d in m.group(1).split(",") if d.strip()]
    if len(set(dims)) != len(dims) or not all(re.fullmatch(r"[A-Za-z_]\w*", d) for d in dims):
        raise FormatError(f"the dimensions of a format must be distinct names, got ({m.group(1)})")
    levels = []
    for part in _split_levels(m.group(2)):
        lm = _LEVEL_RE.fullmatch(part)
        if not lm:
            raise FormatError(f"cannot read level {part.strip()!r}; write 'i: dense', 'j / 4: compressed', ...")
        var, op, block, kind, args = lm.groups()
        if var not in dims:
            raise FormatError(f"level {part.strip()!r} names {var!r}, which is not one of ({', '.join(dims)})")
        levels.append(LevelSpec(dims.index(var), _level_type(kind, args, part), op, int(block or 1)))
    return Format(len(dims), tuple(levels))


def _split_levels(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + ([cur] if cur.strip() else [])


def _level_type(kind: str, args: str | None, part: str) -> LevelType:
    flags = [a.strip() for a in (args or "").split(",") if a.strip()]
    if kind in ("dense", "bitmap") and not flags:
        return Dense() if kind == "dense" else Bitmap()
    if kind in ("compressed", "singleton") and set(flags) <= {"nonunique"}:
        cls = Compressed if kind == "compressed" else Singleton
        return cls(unique="nonunique" not in flags)
    if kind == "nm" and len(flags) == 2 and all(f.isdigit() for f in flags):
        return NM(int(flags[0]), int(flags[1]))
    raise FormatError(f"unknown level type in {part.strip()!r}; level types are dense, compressed, "
                      f"compressed(nonunique), singleton, singleton(nonunique), bitmap, nm(N, M)")
