"""Which module may import which: a file runs in one process, and no module imports another
in a circle. Read from the source (every import, lazy ones in functions included), so it
costs nothing to run. Part of the fast layer (`make test-fast`).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scout"

# Code that touches the processes or signals of tasks, or drives Claude Code.
TASK_PROCESS_CODE = {"scout.supervisor", "scout.zygote", "scout.proctree", "scout.worker", "scout.mirror",
                     "scout.warm"}
TASK_PROCESS_LIBS = {"psutil", "setproctitle", "claude_agent_sdk"}
# Client-side and launcher code: they talk to the API over HTTP and start servers.
CLIENT_SIDE = ["scout.ui", "scout.gradio_idle", "scout.cli", "scout.launcher", "scout.client", "scout.vocab",
               "scout.reducer", "scout.transcript", "scout.mcp_server"]


def _imports(path: Path) -> set[str]:
    """Every module the file imports, anywhere in it, as absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
                continue
            base = "scout" + (f".{node.module}" if node.module else "")
            found.add(base)
            if not node.module:  # from . import x, y
                found.update(f"scout.{alias.name}" for alias in node.names)
    return found


GRAPH = {f"scout.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _internal(names: set[str]) -> set[str]:
    return {n for n in names if n in GRAPH}


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_internal(GRAPH[name]))
    return seen


@pytest.mark.parametrize("module", CLIENT_SIDE)
def test_client_side_modules_import_no_task_process_code(module: str) -> None:
    reached = _closure(module)
    assert not reached & TASK_PROCESS_CODE, f"{module} reaches {sorted(reached & TASK_PROCESS_CODE)}"
    libs = {lib.split(".")[0] for m in reached for lib in GRAPH[m]}
    assert not libs & TASK_PROCESS_LIBS, f"{module} brings in {sorted(libs & TASK_PROCESS_LIBS)}"


def test_the_task_processes_import_no_server_code() -> None:
    reached = _closure("scout.zygote")
    assert not reached & {"scout.server", "scout.supervisor", "scout.ops", "scout.serverproc", "scout.ui"}


def test_no_module_imports_another_in_a_circle() -> None:
    def visit(name: str, path: list[str]) -> None:
        for dep in sorted(_internal(GRAPH[name])):
            if dep in path:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    done: set[str] = set()
    for module in sorted(GRAPH):
        visit(module, [module])


def test_the_graph_was_read() -> None:
    assert {"scout.server", "scout.ui", "scout.supervisor", "scout.zygote"} <= set(GRAPH)
    assert "scout.proctree" in GRAPH["scout.supervisor"] and "scout.serverproc" in GRAPH["scout.ui"]
