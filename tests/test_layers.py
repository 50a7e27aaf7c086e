"""Layers import downwards only (docs/design.md, "Layers"): utils <- models <- pieanet.runtime <- the library
packages (pieanet/heatmaps/) and pieanet/'s own modules (evaluation, training, scoring, ...) <- the tools, and no
tool imports another.

Every project .py file is parsed with ``ast`` (nothing is imported) and its ``pieanet.*`` imports are resolved to
modules: no module imports one of a higher layer, utils/ never imports the models, models/ takes from utils/ only
the low-level modules, and no module imports another that imports it back at module level.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pieanet.members import TOOLS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "utils", "datasets", "configs")  # folders of the checkout that are pieanet.<folder>
# what models/ may take from utils/: modules that import nothing from the project but each other
# the layers, lowest first: a module imports only from its own layer and those below (datasets/, configs/ and
# pieanet/__init__.py, commands.py, members.py stand beside them)
# pieanet/<module or package>: what a tool runs, as functions
LIBRARY_PACKAGES = (
    "pieanet.heatmaps",
    "pieanet.evaluation",
    "pieanet.training",
    "pieanet.scoring",
    "pieanet.comparison",
    "pieanet.exporting",
)
LAYERS = ("utils", "models", "runtime", "library", "tools")
LOW_LEVEL_UTILS = {
    "pieanet.utils.safety",
    "pieanet.utils.image_io",
    "pieanet.utils.exposure",
    "pieanet.utils.shipped",
    "pieanet.utils.errors",
}


def module_name(path):
    """The pieanet.* name of a project file, or None for one outside the package (tests, bench, examples)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "pieanet" or parts[0] in PACKAGES:
        parts = parts if parts[0] == "pieanet" else ("pieanet",) + parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if len(parts) == 1 and parts[0] != "setup":  # a flat script: pieanet.make_heatmap
        return f"pieanet.{parts[0]}"
    return None


def project_files():
    return sorted(
        path for path in ROOT.rglob("*.py") if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    )


MODULES = {module_name(path): path for path in project_files() if module_name(path)}
# pieanet/'s own modules above the runtime (the library the tools call); pieanet/__init__.py, members.py and
# commands.py are the package's entry, not a layer
NOT_LIBRARY = {"pieanet", "pieanet.runtime", "pieanet.members", "pieanet.commands"}
LIBRARY = {
    name for name, path in MODULES.items() if path.relative_to(ROOT).parts[0] == "pieanet" and name not in NOT_LIBRARY
}
BELOW_LIBRARY = ("pieanet.runtime", "pieanet.models", "pieanet.utils", "pieanet.datasets", "pieanet.configs")


def resolve(name, imported=()):
    """The project modules an import of ``name`` (with the names ``imported`` from it) loads: the submodules it names
    where they are modules, else the module itself."""
    found = [f"{name}.{item}" for item in imported if f"{name}.{item}" in MODULES]
    if len(found) < len(imported) or not imported:
        found.append(name)
    return [module for module in found if module in MODULES]


def imports(path, module_level_only=False):
    """The pieanet modules ``path`` imports: [(module, line)]; with ``module_level_only`` not those inside functions
    and classes (which run only when called)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = []

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            ):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                nodes.append(child)
            walk(child)

    walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pieanet":
                    found += [(module, node.lineno) for module in resolve(alias.name)]
                elif alias.name in TOOLS:  # a tool by its bare name (the checkout's root on sys.path)
                    found.append((f"pieanet.{alias.name}", node.lineno))
        elif node.module and node.level == 0 and node.module.split(".")[0] == "pieanet":
            found += [(module, node.lineno) for module in resolve(node.module, [a.name for a in node.names])]
        elif node.module in TOOLS and node.level == 0:
            found.append((f"pieanet.{node.module}", node.lineno))
    return found


def test_the_parser_sees_the_projects_modules_and_their_imports():
    # the truths the checks below rest on: the modules are found and imports resolve to submodules
    for name in (
        "pieanet",
        "pieanet.runtime",
        "pieanet.make_heatmap",
        "pieanet.models",
        "pieanet.models.contract",
        "pieanet.utils.cli",
        "pieanet.datasets.iea40k",
    ):
        assert name in MODULES, name
    assert "pieanet.models.contract" in {m for m, _ in imports(MODULES["pieanet.models.loading"])}
    assert {"pieanet.utils.errors", "pieanet.models.inference"} <= {m for m, _ in imports(MODULES["pieanet.runtime"])}
    assert resolve("pieanet.utils", ["cli", "distributed"]) == ["pieanet.utils.cli", "pieanet.utils.distributed"]
    assert resolve("pieanet.models", ["load_model", "contract"]) == ["pieanet.models.contract", "pieanet.models"]


def layer(name):
    """The layer (LAYERS) of module ``name``, or None for one outside them."""
    if name in {f"pieanet.{tool}" for tool in TOOLS}:
        return "tools"
    if name.startswith(tuple(f"{package}." for package in LIBRARY_PACKAGES)) or name in LIBRARY_PACKAGES:
        return "library"
    if name == "pieanet.runtime":
        return "runtime"
    for folder in ("models", "utils"):
        if name == f"pieanet.{folder}" or name.startswith(f"pieanet.{folder}."):
            return folder
    return None


def test_the_layers_are_told_apart():
    assert [
        layer(name)
        for name in (
            "pieanet.utils.cli",
            "pieanet.models.inference",
            "pieanet.runtime",
            "pieanet.heatmaps.run",
            "pieanet.heatmaps",
            "pieanet.make_heatmap",
            "pieanet.datasets.iea40k",
            "pieanet.commands",
        )
    ] == ["utils", "models", "runtime", "library", "library", "tools", None, None]


def test_every_module_imports_only_its_own_layer_and_those_below():
    found = [
        f"{MODULES[name].relative_to(ROOT)}:{line} ({layer(name)}) imports {module} ({layer(module)})"
        for name in MODULES
        if layer(name)
        for module, line in imports(MODULES[name])
        if layer(module) and LAYERS.index(layer(module)) > LAYERS.index(layer(name))
    ]
    assert not found, f"layers, lowest first: {LAYERS}; move the code down or the import up:\n" + "\n".join(found)


def test_utils_never_imports_the_models():
    found = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
        for name in MODULES
        if name.startswith("pieanet.utils")
        for module, line in imports(MODULES[name])
        if module.startswith("pieanet.models")
    ]
    assert not found, "utils/ sits below models/; move the code up (models/, pieanet/runtime.py):\n" + "\n".join(found)


def test_models_import_only_low_level_utils():
    found = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
        for name in MODULES
        if name.startswith("pieanet.models")
        for module, line in imports(MODULES[name])
        if module.startswith("pieanet.utils") and module not in LOW_LEVEL_UTILS
    ]
    assert not found, f"models/ may import from utils/ only {sorted(LOW_LEVEL_UTILS)}:\n" + "\n".join(found)


def test_low_level_utils_import_only_each_other():
    found = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
        for name in sorted(LOW_LEVEL_UTILS)
        for module, line in imports(MODULES[name])
        if module not in LOW_LEVEL_UTILS
    ]
    assert not found, "\n".join(found)


def import_cycles(graph):
    """Every cycle of ``graph`` ({module: {imported}}) found by a depth-first search, each as a list of modules."""
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other) :] + [other])
            elif other not in state:
                visit(other, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_the_cycle_search_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_level_import_cycle():
    graph = {
        name: {module for module, _ in imports(path, module_level_only=True) if module != name}
        for name, path in MODULES.items()
    }
    cycles = import_cycles(graph)
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "modules, absent",
    [
        ("pieanet.heatmaps.summary, pieanet.heatmaps.report", ("torch", "pieanet.models", "pieanet.utils.cli")),
        ("pieanet.utils.cli", ("torch", "pieanet.models")),
    ],
)
def test_the_command_line_summary_and_report_load_neither_torch_nor_the_models(modules, absent):
    code = f"import sys; import {modules}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_layer_sets_hold_what_they_name():
    assert {"make_heatmap", "train_wavelet", "evaluate", "score", "compare_methods", "export"} <= set(TOOLS)
    assert set(TOOLS) == {path.stem for path in ROOT.glob("*.py") if path.stem != "setup"}  # every root script
    assert {layer(name) for name in LIBRARY} == {"library"}  # the two views of the library agree
    assert {
        "pieanet.evaluation",
        "pieanet.training.run",
        "pieanet.scoring",
        "pieanet.comparison",
        "pieanet.exporting",
    } <= LIBRARY
    assert not LIBRARY & {f"pieanet.{tool}" for tool in TOOLS} and "pieanet.runtime" not in LIBRARY


def test_the_import_reader_sees_tools_imported_by_any_name_at_any_level(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import evaluate\n\ndef f():\n    from pieanet import score\n"
        "    from train_wavelet import main\n    import pieanet.export\n"
    )
    assert [module for module, _ in imports(planted)] == [
        "pieanet.evaluate",
        "pieanet.score",
        "pieanet.train_wavelet",
        "pieanet.export",
    ]
    assert [module for module, _ in imports(planted, module_level_only=True)] == ["pieanet.evaluate"]


def test_no_tool_imports_another_tool():
    """A tool is a command line over the library: what two tools share lives in the library (pieanet/), never in
    one tool that the other imports, at module level or inside a function."""
    found = [
        f"{MODULES[f'pieanet.{tool}'].relative_to(ROOT)}:{line} imports {module}"
        for tool in sorted(TOOLS)
        for module, line in imports(MODULES[f"pieanet.{tool}"])
        if module != f"pieanet.{tool}" and module.removeprefix("pieanet.") in TOOLS
    ]
    assert not found, "move what the tools share into the library (pieanet/):\n" + "\n".join(found)


def test_the_library_imports_no_tool_and_nothing_below_imports_the_library():
    tools = {f"pieanet.{tool}" for tool in TOOLS}
    upwards = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
        for name in sorted(LIBRARY)
        for module, line in imports(MODULES[name])
        if module in tools
    ]
    upwards += [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
        for name in sorted(MODULES)
        if name.startswith(BELOW_LIBRARY)
        for module, line in imports(MODULES[name])
        if module in LIBRARY or module in tools
    ]
    assert not upwards, "layers import downwards only (docs/design.md, Layers):\n" + "\n".join(upwards)
