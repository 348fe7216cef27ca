"""The shape of the code (DESIGN.md, issue 14): the language imports no backend and nothing above it,
only the CUDA backend's device module is imported from outside the backends, and no import circles
(function-level imports count: a circle through a lazy import is still a back-edge)."""

import ast
import pathlib

import sparsedsl

ROOT = pathlib.Path(sparsedsl.__file__).parent
ABOVE_THE_LANGUAGE = ("sparsedsl.backends", "sparsedsl.compiler", "sparsedsl.tensor", "sparsedsl.composite",
                      "sparsedsl.array_ops", "sparsedsl.templates", "sparsedsl.stdlib")


def _modules() -> dict:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = ["sparsedsl", *f.relative_to(ROOT).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            subs = {f"{base}.{a.name}" for a in node.names} & modules.keys()
            found |= subs or ({base} & modules.keys())  # `from . import x` imports x, not the package
    return found - {name}


def _graph() -> dict:
    modules = _modules()
    return {m: _imports(m, f, modules) for m, f in modules.items()}


def test_the_language_imports_nothing_above_it():
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(ABOVE_THE_LANGUAGE))
           for m, deps in graph.items() if m.startswith("sparsedsl.lang")}
    assert not {m: d for m, d in bad.items() if d}


def test_outside_the_backends_only_the_device_module_and_the_entry_points_are_imported():
    allowed = {"sparsedsl.backends.cuda.device", "sparsedsl.backends.cache"}  # (the cache directory)
    entry = {"sparsedsl.compiler": {"sparsedsl.backends.cpu", "sparsedsl.backends.cpu.compile",
                                    "sparsedsl.backends.cuda", "sparsedsl.backends.cuda.compiled",
                                    "sparsedsl.backends.cuda.device", "sparsedsl.backends.cuda.render"}}
    bad = {}
    for m, deps in _graph().items():
        if m.startswith("sparsedsl.backends"):
            continue
        used = {d for d in deps if d.startswith("sparsedsl.backends")} - allowed - entry.get(m, set())
        if used:
            bad[m] = sorted(used)
    assert not bad


def test_no_import_circles():
    graph = {m: {d for d in deps if d != "sparsedsl"} for m, deps in _graph().items() if m != "sparsedsl"}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v), on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop()), on_stack.discard(comp[-1])
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles


def test_every_module_opens_with_a_docstring_and_stays_short():
    long, bare = {}, []
    for m, f in _modules().items():
        text = f.read_text()
        if text.strip() and ast.get_docstring(ast.parse(text)) is None:
            bare.append(m)
        if m.startswith(("sparsedsl.backends", "sparsedsl.lang", "sparsedsl.compiler", "sparsedsl.templates")) \
                and text.count("\n") > 650:
            long[m] = text.count("\n")
    assert not bare and not long, (bare, long)


def test_no_backend_matches_the_lowerings_variable_names():
    """Backends read what the loop IR says (``Reduce``/``Touch`` statements, ``Emit.into``, the
    function's ``Output``, loops' ``Iteration``), never the names the lowering happens to choose: no
    string in their code is one of those names (nor builds one, as ``f"out_c{d}"`` did)."""
    names = {"acc", "touched", "out", "out_n", "out_cap", "out_v", "offs", "oq", "cnt", "counts", "n_outer",
             "ws_v", "ws_f", "ws_k", "ws_l", "ws_b", "ws_n", "ws_gen", "ws_cap"}
    found = []
    for path in (ROOT / "backends").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # an f-string's literal parts, e.g. "out_c" in f"out_c{d}"
                parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
                found += [(path.name, node.lineno, p) for p in parts if p.startswith(("out_c", "ws_"))]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append((path.name, node.lineno, node.value))
    assert not found, found
