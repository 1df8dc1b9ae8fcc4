"""The layering of docs/architecture.md, held against the code: no import runs back up, and
what runs inside the user's process never loads the analysis, pandas or matplotlib."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dcnprobe"
# Loaded in the probed process: the attach's entry, the agent, the probe and its listeners.
IN_PROCESS = ("dcnprobe.attach.bootstrap", "dcnprobe.attach.agent", "dcnprobe.probe", "dcnprobe.launched")
NEVER_IN_PROCESS = ("pandas", "matplotlib", "rich", "click", "dcnprobe.analysis", "dcnprobe.runs", "dcnprobe.report")


def layer_table() -> list[tuple[str, list[str]]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return [(line.split()[0], line.split()[1:]) for line in block.group(1).strip().splitlines()]


def layer_of(module: str, table) -> int | None:
    for index, (_, prefixes) in enumerate(table):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "site" not in p.relative_to(PACKAGE).parts}


def imported(tree: ast.AST, top_level_only: bool = False):
    """(line, module) for each `dcnprobe...` or other absolute import; with top_level_only,
    the ones that run when the module loads (not inside functions)."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def test_every_module_of_the_toolkit_has_a_layer():
    table = layer_table()
    assert [m for m in modules() if m != "dcnprobe" and layer_of(m, table) is None] == []


def test_no_import_runs_back_up():
    table = layer_table()
    names = modules()
    upward = []
    for module, path in names.items():
        own = layer_of(module, table)
        if own is None:
            continue
        for line, target in imported(ast.parse(path.read_text())):
            theirs = layer_of(target, table) if target in names or target.rpartition(".")[0] in names else None
            if theirs is not None and theirs > own:
                upward.append(f"{module} ({table[own][0]}) imports {target} ({table[theirs][0]}), line {line}")
    assert upward == []


def test_the_probed_process_never_loads_the_analysis():
    """The modules that load when the probe or the attach does (imports that run at load
    time, followed through the package) include none of the heavy or reading ones."""
    names = modules()
    seen, todo, external = set(), list(IN_PROCESS), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo += [p for p in parents if p in names]  # importing a.b.c runs a and a.b first
        for _, target in imported(ast.parse(names[module].read_text()), top_level_only=True):
            if target in names:
                todo.append(target)
            elif target.rpartition(".")[0] in names:
                todo.append(target.rpartition(".")[0])
            elif not target.startswith("dcnprobe"):
                external.add(target.split(".")[0])
    loaded = seen | external
    assert [m for m in loaded for banned in NEVER_IN_PROCESS if m == banned or m.startswith(banned + ".")] == []
