"""`python -m benchmarks.table [JSON]`: the README's headline table (markdown) from a results file."""

from __future__ import annotations

import json
import sys

DEFAULT = "benchmarks/results/cpu-amd-epyc-2c.json"


def fmt(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.2g} µs"


def table(results: dict) -> str:
    lines = ["| case | sparsedsl | scipy | ratio | fastest other peer | ratio |", "|---|---|---|---|---|---|"]
    for name, case in results["cases"].items():
        impls = case.get("impls", {})
        ours = impls.get("sparsedsl", {})
        if "median" not in ours:
            continue
        t = ours["median"]
        sc = impls.get("scipy", {}).get("median")
        others = {n: r["median"] for n, r in impls.items()
                  if n not in ("sparsedsl", "scipy") and "median" in r and r.get("correct")}
        best = min(others, key=others.get) if others else None
        row = [f"{name}: {case['desc']}", fmt(t), fmt(sc) if sc else "–", f"{sc / t:.2f}x" if sc else "–",
               f"{best} {fmt(others[best])}" if best else "–", f"{others[best] / t:.2f}x" if best else "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    path = (argv or sys.argv[1:] or [DEFAULT])[0]
    with open(path) as f:
        results = json.load(f)
    m = results["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, "
          f"numba {m['numba']}; medians of {results['reps']} interleaved runs; ratio = peer time / sparsedsl time\n")
    print(table(results))


if __name__ == "__main__":
    main()
