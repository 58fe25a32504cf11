"""The project's imports go one way, without cycles: parsed from the source with `ast`, every `import` and
`from … import` of a project module counts, at the top of a module or inside a function (relative imports
resolved), so a cycle cannot hide in a local import.

Layers: converters know nothing of repro; repro nothing of tune or bench (STYLE.md, "imports only downward").
Inside repro, the first stage of the data flow, `repro.data`, knows nothing of the stages after it; the last two,
`repro.evaluation` then `repro.reporting`, are known to nothing before them; and the loop knows nothing of the Ray
side (`repro.cluster`), which only the command line imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("repro", "converters", "tune", "bench")


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: file} of every .py under `root/<package>` (a package by its __init__.py)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """{module: the project modules it imports anywhere in its file}. `from pkg import name` is an edge to the
    submodule `pkg.name` when there is one, else to `pkg`; `import a.b.c` to the deepest project module named."""
    modules = module_names(root, packages)

    def known(name: str) -> str | None:  # the deepest project module that `name` starts with
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, set())
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(filter(None, (known(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # `from ..x import y` inside package a.b: a.x
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else known(base))
        edges.discard(None)
        edges.discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search, modules in name order)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def inside(module: str, packages: tuple[str, ...]) -> bool:
    """`module` is one of `packages` or inside one."""
    return any(module == package or module.startswith(package + ".") for package in packages)


def imports_from(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """`module → imported` for every edge from package `source` into package `target`."""
    return sorted(f"{m} → {t}" for m, targets in graph.items() if inside(m, (source,))
                  for t in targets if inside(t, (target,)))


def test_project_imports_have_no_cycle():
    graph = import_graph(REPO)
    assert len(graph) > 50 and graph["repro.runs"] >= {"repro.checkpoint", "repro.models"}  # the parse sees them
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' → '.join(cycle)}"


def test_imports_only_go_down():
    graph = import_graph(REPO)
    upward = imports_from(graph, "converters", "repro")
    for higher in ("tune", "bench"):
        upward += imports_from(graph, "repro", higher) + imports_from(graph, "converters", higher)
    assert not upward, f"imports against the layers (converters < repro < tune, bench): {upward}"


def test_the_data_stage_knows_nothing_of_the_stages_after_it():
    """images → features → generator → losses → loop: `repro.data` imports, from the rest of repro, only the
    asset paths and the error root, never nets, losses, the loop or the tools that use it."""
    graph = import_graph(REPO)
    modules = {"repro.data", "repro.data.sources", "repro.data.caffe", "repro.data.datasets", "repro.data.loaders",
               "repro.data.prewarp"}
    assert modules <= set(graph) and graph["repro.data.loaders"] >= {"repro.data.datasets", "repro.data.sources"}
    targets = {edge.split(" → ")[1] for edge in imports_from(graph, "repro.data", "repro")}
    outside = {target for target in targets if target != "repro.data" and not target.startswith("repro.data.")}
    assert outside <= {"repro.assets", "repro.errors"}, f"the data stage imports later stages: {sorted(outside)}"


def reachable(graph: dict[str, set[str]], start: str, within: str = "repro") -> set[str]:
    """Every module of `within` that importing `start` imports, `start` included."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [target for target in graph.get(module, ()) if inside(target, (within,))]
    return seen


def defines_main(path: Path) -> bool:
    """A command-line module: one with a top-level `def main`."""
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in ast.parse(path.read_text()).body)


LAST_STAGES = ("repro.evaluation", "repro.reporting")


def test_evaluation_and_reporting_come_after_the_loop_and_before_the_commands():
    """… → loop → evaluation → reporting. Nothing `python -m repro.train` reaches imports evaluation or reporting
    (the loop writes its training grids with `repro.grids`, below both); evaluation imports nothing of reporting;
    both packages are libraries (no `main`) and import neither the trainer's CLI nor the commands built on them
    (`python -m repro.evaluate`, `repro.report`, …: thin modules at the top of repro)."""
    graph = import_graph(REPO)
    modules = module_names(REPO, ("repro",))
    training = reachable(graph, "repro.train")
    assert {"repro.loop", "repro.grids", "repro.runs", "repro.losses"} <= training  # the parse sees the loop's side
    assert not sorted(m for m in training if inside(m, LAST_STAGES)), "training imports evaluation or reporting"
    assert not imports_from(graph, "repro.evaluation", "repro.reporting")

    library = [m for m in modules if inside(m, LAST_STAGES)]
    assert {"repro.evaluation.scores", "repro.reporting.claims"} <= set(library)
    assert not [m for m in library if defines_main(modules[m])], "a library module holds a command's main()"
    commands = {m for m, path in modules.items() if not inside(m, LAST_STAGES) and defines_main(path)
                and any(inside(target, LAST_STAGES) for target in graph[m])} | {"repro.train"}
    assert {"repro.evaluate", "repro.figures", "repro.report", "repro.publish"} <= commands
    upward = sorted(f"{m} → {target}" for m in library for target in graph[m] if target in commands)
    assert not upward, f"evaluation / reporting import a command-line module: {upward}"


def test_the_loop_knows_nothing_of_ray():
    """The Ray side (`repro.cluster`: shipping, resume, launcher) sits above the loop: nothing the loop imports,
    directly or not, reaches it or the command line, and inside repro only the command line (`repro.train`)
    imports it."""
    graph = import_graph(REPO)
    assert {"repro.cluster.shipping", "repro.cluster.resume", "repro.cluster.launcher"} <= set(graph)
    assert graph["repro.cluster.launcher"] >= {"repro.loop", "repro.cluster.resume", "repro.cluster.shipping"}
    above = {m for m in reachable(graph, "repro.loop") if m == "repro.train" or m.startswith("repro.cluster")}
    assert not above, f"the loop reaches the launcher side: {sorted(above)}"
    users = {edge.split(" → ")[0] for edge in imports_from(graph, "repro", "repro.cluster")}
    assert {u for u in users if not u.startswith("repro.cluster")} == {"repro.train"}, sorted(users)


def write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_detector_finds_a_cycle_through_local_and_relative_imports(tmp_path):
    """pkg.a → pkg.b (top) → pkg.sub.c (relative, inside a function) → pkg.a (`from .. import a`): one cycle;
    remove the local import and none is left."""
    files = {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n",
             "pkg/b.py": "import json\n\ndef load():\n    from .sub.c import helper\n    return helper\n",
             "pkg/sub/__init__.py": "", "pkg/sub/c.py": "from .. import a\n\ndef helper():\n    return a\n",
             "pkg/d.py": "import pkg.a\nfrom pkg.sub import c\n"}
    write_package(tmp_path, files)
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.a", "pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]

    write_package(tmp_path, {"pkg/b.py": "import json\n\ndef load():\n    return json\n"})
    assert find_cycle(import_graph(tmp_path, ("pkg",))) is None


def test_an_upward_import_is_named(tmp_path):
    write_package(tmp_path, {"low/__init__.py": "", "low/x.py": "def f():\n    from high.y import g\n",
                             "high/__init__.py": "", "high/y.py": "from low.x import f\n"})
    graph = import_graph(tmp_path, ("low", "high"))
    assert imports_from(graph, "low", "high") == ["low.x → high.y"]
    assert find_cycle(graph) == ["high.y", "low.x", "high.y"]
