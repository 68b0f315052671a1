"""The package's imports run one way: no module imports a layer above its own, and no modules import each other
in a circle. Read from the source (AST), imports inside functions included: a deferred import is still a
dependency.

The layers, top first. A module may import its own layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chatbot_model"

LAYERS = [
    {"cli"},                                  # the click commands
    {"server"},                               # the FastAPI app
    {"lifecycle"},                            # pyfunc model, registry, evaluation, gate, export, batch scoring
    {"pipeline"},                             # LLMService and what it orchestrates per request
    {"guardrail"},                            # the toxicity check
    {"providers"},                            # the answer providers (local, OpenAI, Anthropic)
    {"retrieval"},                            # documents, embedder, index
    {"store"},                                # the SQL database: feedback, conversations, migrations
    {"tracing"},                              # the trace pipeline
    {"config", "errors", "contract", "__init__"},  # what every part uses
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS in this test")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py") if "versions" not in p.parts}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports (the longest known prefix of each imported name)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            parts = name.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != module and parts != ["chatbot_model"]:
                found.add(".".join(parts))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, set(modules)) for m, p in modules.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) < _layer(m))
    assert upward == [], "imports running up the layers:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == [], "import circles:\n" + "\n".join(circles)


def test_the_checks_see_an_upward_import_and_a_circle():
    # the two checks above are only as good as the graph: it must contain the edges a reader sees
    graph = _graph()
    assert "chatbot_model.pipeline.service" in graph["chatbot_model.lifecycle.pyfunc"]
    assert "chatbot_model.config" in graph["chatbot_model.retrieval.rag"]
    assert _layer("chatbot_model.server.main") < _layer("chatbot_model.pipeline.service")


def test_every_module_is_in_a_layer():
    for module in _modules():
        _layer(module)


def test_imports_inside_functions_say_why():
    # an import of the package's own modules (or of the standard library) inside a function hides an arrow of the
    # graph from a reader: it belongs at the top of the module unless deferring it saves start-up time or keeps a
    # replacement visible, and then its line says so
    silent = []
    for module, path in _modules().items():
        lines = path.read_text().split("\n")
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                    name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    own = name.split(".")[0] in ("chatbot_model", *sys.stdlib_module_names)
                    said = any("#" in line for line in lines[node.lineno - 2:node.end_lineno])  # or just above
                    if own and not said:
                        silent.append(f"{module}:{node.lineno} {name}")
    assert silent == [], "imports inside functions without a reason:\n" + "\n".join(silent)
