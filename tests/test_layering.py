"""The import structure of docs/architecture.md, enforced: layers, no cycles, no hidden imports.

Every project module is parsed (not imported); an edge A -> B is an import of B in A. Importing
a.b.c also runs the packages a and a.b, so it is an edge to them too, unless A lives inside
them (a package's own modules are loaded while it is).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cft_rl", "reward")
# Third-party packages that are optional or slow to import: a project module that imports
# one of them (itself or through its imports) may be imported inside a function.
HEAVY = ("vllm", "verl", "deepspeed", "trl", "matplotlib", "ray")

# Layers, lowest first. A module may import the layers below its own, and its own package;
# the packages of one layer do not import one another (in particular the four stages).
LAYERS: list[tuple[str, ...]] = [
    ("reward",),
    ("cft_rl.errors", "cft_rl.outputs"),
    ("cft_rl.registry",),
    ("cft_rl.files", "cft_rl.config", "cft_rl.jsonl", "cft_rl.commands", "cft_rl.console"),
    (
        "cft_rl.checkpointing",
        "cft_rl.experiment_plan",
        "cft_rl.modeling",
        "cft_rl.metric_sinks",
        "cft_rl.run_settings",
        "cft_rl.scale",
        "cft_rl.token_logprobs",
    ),  # fmt: skip
    ("cft_rl.data",),
    ("cft_rl.generation", "cft_rl.toy"),
    ("cft_rl.identify", "cft_rl.sft", "cft_rl.grpo", "cft_rl.eval"),
    ("cft_rl.report",),
    ("cft_rl.experiment",),
    ("cft_rl.cli",),
]
# The modules that run a stage's work: a report reads what they wrote, never them.
ENGINES = (
    "cft_rl.identify.runner",
    "cft_rl.identify.decoders",
    "cft_rl.sft.trainer",
    "cft_rl.sft.distributed",
    "cft_rl.grpo.runner",
    "cft_rl.grpo.local_engine",
    "cft_rl.grpo.verl_engine",
    "cft_rl.eval.runner",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


class Imports:
    """Per module: what it imports at module level, and inside functions."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules
        self.top: dict[str, set[str]] = {}
        self.deferred: dict[str, set[str]] = {}
        self.third_party: dict[str, set[str]] = {}
        for name, path in modules.items():
            self._scan(name, path)

    def _scan(self, name: str, path: Path) -> None:
        tree = ast.parse(path.read_text(), filename=str(path))
        top, deferred, third = set(), set(), set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = self._targets(node, name, path.name == "__init__.py")
            ours = {t for t in targets if t.split(".")[0] in PACKAGES}
            (top if node in tree.body else deferred).update(ours)
            if node in tree.body:
                third.update(t.split(".")[0] for t in targets if t.split(".")[0] not in PACKAGES)
        self.top[name], self.deferred[name], self.third_party[name] = top, deferred, third

    def _targets(self, node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
        """The modules an import statement names: `from pkg import sub` names pkg.sub, and
        pkg itself only when it also takes a name defined in pkg's __init__."""
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            parts = name.split(".") if is_package else name.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.modules]
        from_init = len(submodules) < len(node.names)
        return ([base] if from_init else []) + submodules

    def edges(self, name: str, deferred: bool = False) -> set[str]:
        """Modules that importing `name` runs directly: each named module, and the packages
        above it, which Python runs first unless `name` is inside them (then they are being
        run already). A module that names its own package's __init__ depends on it."""
        found = set()
        for target in self.deferred[name] if deferred else self.top[name]:
            if target in self.modules and target != name:
                found.add(target)
            parts = target.split(".")
            for depth in range(1, len(parts)):
                module = ".".join(parts[:depth])
                inside = name.startswith(module + ".")
                if module in self.modules and not inside:
                    found.add(module)
        return found

    def heavy(self) -> set[str]:
        """Modules whose import (through any chain of module-level imports) loads a HEAVY one."""
        heavy = {m for m, third in self.third_party.items() if third & set(HEAVY)}
        changed = True
        while changed:
            changed = False
            for module in self.modules:
                if module not in heavy and self.edges(module) & heavy:
                    heavy.add(module)
                    changed = True
        return heavy


def layer_of(module: str) -> int:
    """The layer whose most specific prefix matches `module`."""
    if module == "cft_rl":  # the package's __init__: its version and docstring
        return 1
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} is in no layer of LAYERS: add it there"
    return best


def package_of(module: str) -> str:
    """The prefix of LAYERS that `module` belongs to (its own package, for the layer rule)."""
    if module == "cft_rl":
        return module
    return max(
        (p for prefixes in LAYERS for p in prefixes if module == p or module.startswith(p + ".")),
        key=len,
    )


def layering_violations(imports: Imports) -> list[str]:
    problems = []
    for module in imports.modules:
        for target in imports.edges(module) | imports.edges(module, deferred=True):
            if package_of(target) == package_of(module):
                continue
            if layer_of(target) >= layer_of(module):
                problems.append(f"{module} imports {target}: not a lower layer")
            if module.startswith("cft_rl.report") and target in ENGINES:
                problems.append(f"{module} imports the engine {target}")
    return sorted(problems)


def cycles(imports: Imports) -> list[list[str]]:
    """Strongly connected components (more than one module) of the module-level graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in imports.edges(node):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in imports.modules:
        if module not in index:
            visit(module)
    return found


def hidden_imports(imports: Imports) -> list[str]:
    heavy = imports.heavy()
    return sorted(
        f"{module} imports {target} inside a function"
        for module in imports.modules
        for target in imports.edges(module, deferred=True)
        if target not in heavy
    )


@pytest.fixture(scope="module")
def imports() -> Imports:
    return Imports(project_modules())


def test_every_module_has_a_layer(imports):
    for module in imports.modules:
        layer_of(module)


def test_imports_go_down_the_layers(imports):
    assert layering_violations(imports) == []


def test_no_import_cycles(imports):
    assert cycles(imports) == []


def test_no_function_level_imports_of_our_modules_except_to_defer_a_heavy_one(imports):
    assert hidden_imports(imports) == []


def test_reward_imports_nothing_of_cft_rl(imports):
    for module in imports.modules:
        if module.startswith("reward"):
            assert not {
                t for t in imports.top[module] | imports.deferred[module] if t.startswith("cft_rl")
            }


def _with_module(imports: Imports, name: str, source: str) -> Imports:
    """`imports` plus one made-up module (for the tests that the checks can fail)."""
    path = ROOT / (name.replace(".", "/") + ".py")
    imports.modules[name] = path
    tree_source = source
    top, deferred = set(), set()
    tree = ast.parse(tree_source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            (top if node in tree.body else deferred).update(imports._targets(node, name, False))
    imports.top[name], imports.deferred[name], imports.third_party[name] = top, deferred, set()
    return imports


def test_the_checks_catch_a_forbidden_import():
    """A stage importing another stage, a report importing an engine, reward importing
    cft_rl, a cycle, and a hidden import are each reported."""
    fresh = Imports(project_modules())
    assert layering_violations(_with_module(fresh, "cft_rl.sft.bad", "import cft_rl.grpo.algos"))
    fresh = Imports(project_modules())
    report = _with_module(fresh, "cft_rl.report.bad", "from cft_rl.sft.trainer import run_sft")
    assert "cft_rl.report.bad imports the engine cft_rl.sft.trainer" in layering_violations(report)
    fresh = Imports(project_modules())
    assert layering_violations(_with_module(fresh, "reward.bad", "import cft_rl.config"))
    fresh = Imports(project_modules())
    fresh.top["cft_rl.errors"] = fresh.top["cft_rl.errors"] | {"cft_rl.config"}
    assert any({"cft_rl.config", "cft_rl.errors"} <= set(cycle) for cycle in cycles(fresh))
    fresh = Imports(project_modules())
    fresh.top["cft_rl.generation.hf"] = fresh.top["cft_rl.generation.hf"] | {"cft_rl.generation"}
    # hf taking a name from its own package's __init__, which imports hf: a cycle
    assert any({"cft_rl.generation", "cft_rl.generation.hf"} <= set(c) for c in cycles(fresh))
    fresh = Imports(project_modules())
    hidden = _with_module(fresh, "cft_rl.eval.bad", "def f():\n    import cft_rl.jsonl\n")
    assert hidden_imports(hidden) == ["cft_rl.eval.bad imports cft_rl.jsonl inside a function"]


def test_the_picture_in_docs_architecture_is_this_layering():
    """docs/architecture.md draws LAYERS: one row per layer, top to bottom, the names being
    the last part of each prefix (separated by " . ", a comment after them)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagram = text.split("```")[1]
    known = {prefix.split(".")[-1] for layer in LAYERS for prefix in layer}
    rows = []
    for line in diagram.splitlines():
        words = [w for w in line.split() if w != "."]
        names = []
        for word in words:
            if word not in known:
                break
            names.append(word)
        if names:
            rows.append(set(names))
    expected = [{prefix.split(".")[-1] for prefix in layer} for layer in reversed(LAYERS)]
    assert rows == expected
