"""Contraction order: which pairs of a product of tensors to contract first (opt_einsum's idea).

A term Σ_{summed} Π_k T_k[indices_k] can be evaluated as one loop nest over every index (the
*naive* order) or as a sequence of pairwise contractions into temporaries. Cost of one pairwise
contraction, sparsity-aware:

    flops = Π extents(indices of the pair) · Π densities(stored operands of the pair)
    bytes = the operands read (dense: 8 per entry; sparse: 12 per stored entry) + the result written
    cost  = flops + bytes / 2            (a machine balance of about four flops per 8-byte word)

``best_order`` finds the cheapest binary tree by dynamic programming over subsets (up to 10
operands) or greedily (cheapest next pair, as opt_einsum's ``greedy``) beyond that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DP_LIMIT = 10


@dataclass(frozen=True)
class Operand:
    """One factor of a product: its index names, the fraction of entries it stores, a label for notes."""

    indices: tuple
    density: float = 1.0
    label: str = "?"


@dataclass(frozen=True)
class Plan:
    tree: object  # an operand number (leaf), a pair (left, right) of trees, or None: one loop nest
    cost: float
    naive_cost: float

    def describe(self, operands) -> str:
        return _show(self.tree, operands)


def _show(tree, operands) -> str:
    if tree is None:
        return "one loop nest: " + " · ".join(op.label for op in operands)
    if isinstance(tree, int):
        return operands[tree].label
    return f"({_show(tree[0], operands)} · {_show(tree[1], operands)})"


def best_order(operands: list[Operand], keep, extents: dict) -> Plan:
    """The cheapest pairwise order of ``operands``; ``keep``: indices of the result (never summed)."""
    keep = set(keep)
    n = len(operands)
    naive = naive_cost(operands, keep, extents)
    if n == 1:
        return Plan(0, naive, naive)
    sets = [frozenset(op.indices) for op in operands]
    if n <= DP_LIMIT:
        tree, cost = _dp(operands, sets, keep, extents)
    else:
        tree, cost = _greedy(operands, sets, keep, extents)
    return Plan(tree, cost, naive)


def naive_cost(operands, keep, extents) -> float:
    """One loop nest over every index of the product."""
    every = set().union(*(op.indices for op in operands)) if operands else set()
    space = _volume(every, extents) * math.prod(op.density for op in operands)
    flops = space * max(len(operands) - 1, 1)
    out = _volume(set(keep) & every, extents)
    return flops + (sum(_bytes(op, extents) for op in operands) + 8 * out) / 2


def pair_cost(left, right, out, extents, left_leaf=None, right_leaf=None) -> float:
    """Cost of contracting index sets ``left`` and ``right`` into ``out``; ``*_leaf``: the stored
    operand when that side is one (its density restricts the loop space), else None (a dense temporary)."""
    density = 1.0
    read = 0.0
    for side, leaf in ((left, left_leaf), (right, right_leaf)):
        if leaf is not None:
            density *= leaf.density
            read += _bytes(leaf, extents)
        else:
            read += 8 * _volume(side, extents)
    flops = _volume(left | right, extents) * density
    return flops + (read + 8 * _volume(out, extents)) / 2


def _volume(indices, extents) -> float:
    return float(math.prod(extents[v] for v in indices))


def _bytes(op: Operand, extents) -> float:
    size = _volume(op.indices, extents)
    return 8 * size if op.density >= 1 else 12 * size * op.density


def _outside(mask, all_mask, sets):
    out = set()
    rest = all_mask & ~mask
    k = 0
    while rest:
        if rest & 1:
            out |= sets[k]
        rest >>= 1
        k += 1
    return out


def _dp(operands, sets, keep, extents):
    n = len(operands)
    full = (1 << n) - 1
    idx = {}
    for mask in range(1, full + 1):
        idx[mask] = frozenset().union(*(sets[k] for k in range(n) if mask >> k & 1))
    result = {}  # the indices a sub-product must keep: the result's and those shared with the rest
    for mask in range(1, full + 1):
        result[mask] = idx[mask] & (keep | _outside(mask, full, sets))
    best = {1 << k: (0.0, k) for k in range(n)}
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in best or (not result[mask] and mask != full):
            continue  # no 0-D temporaries: the lowering's operands have at least one index
        choice = None
        sub = (mask - 1) & mask
        while sub:
            other = mask ^ sub
            if sub < other and sub in best and other in best:  # each split once
                cl, tl = best[sub]
                cr, tr = best[other]
                c = cl + cr + pair_cost(result[sub], result[other], result[mask], extents,
                                        operands[tl] if isinstance(tl, int) else None,
                                        operands[tr] if isinstance(tr, int) else None)
                if choice is None or c < choice[0]:
                    choice = (c, (tl, tr))
            sub = (sub - 1) & mask
        if choice is not None:
            best[mask] = choice
    if full not in best:
        return None, naive_cost(operands, keep, extents)
    cost, tree = best[full]
    return tree, cost


def _greedy(operands, sets, keep, extents):
    items = [(k, sets[k], operands[k]) for k in range(len(operands))]  # (tree, indices, leaf or None)
    total = 0.0
    while len(items) > 1:
        choice = None
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                others = set().union(*(items[c][1] for c in range(len(items)) if c not in (a, b)))
                out = (items[a][1] | items[b][1]) & (keep | others)
                if not out and len(items) > 2:
                    continue  # no 0-D temporaries
                c = pair_cost(items[a][1], items[b][1], out, extents, items[a][2], items[b][2])
                if choice is None or c < choice[0]:
                    choice = (c, a, b, frozenset(out))
        if choice is None:
            return None, naive_cost(operands, keep, extents)
        c, a, b, out = choice
        total += c
        merged = ((items[a][0], items[b][0]), out, None)
        items = [it for k, it in enumerate(items) if k not in (a, b)] + [merged]
    return items[0][0], total
