"""utils/ is shared infrastructure (docs/design.md, "Layers"): every module there serves at least two owners.

An owner is a root tool (make_heatmap.py, ...), a library module or package under pieanet/ (pieanet/runtime.py,
pieanet/heatmaps/, ...), models/, datasets/ or bench/. A utils module imported by another utils module serves that
module's owners too; tests, examples and utils itself are no owners. Code that serves one owner lives with it.
Files are parsed with ``ast`` (nothing is imported), by tests/test_layers.py's parser.
"""

from collections import defaultdict

from test_layers import MODULES, ROOT, imports, project_files

OWNER_FOLDERS = ("models", "datasets", "bench")


def owner(path):
    """The owner a project file belongs to, or None (utils/, tests/, examples/, setup.py)."""
    parts = path.relative_to(ROOT).parts
    if len(parts) == 1:
        return None if parts[0] == "setup.py" else parts[0]
    if parts[0] == "pieanet":
        return "pieanet" if parts[1] == "__init__.py" else "pieanet/" + parts[1].removesuffix(".py")
    return parts[0] if parts[0] in OWNER_FOLDERS else None


def utils_owners():
    """{utils module: its owners}, a utils module's importers' owners included (through any chain of utils)."""
    direct, utils_importers = defaultdict(set), defaultdict(set)
    for path in project_files():
        parts = path.relative_to(ROOT).parts
        for module, _ in imports(path):
            if not module.startswith("pieanet.utils."):
                continue
            if parts[0] == "utils":
                utils_importers[module].add("pieanet.utils." + path.stem)
            elif owner(path):
                direct[module].add(owner(path))

    def owners_of(module, seen):
        found = set(direct[module])
        for importer in utils_importers[module] - seen:
            found |= owners_of(importer, seen | {module})
        return found

    return {
        name: owners_of(name, set())
        for name in MODULES
        if name.startswith("pieanet.utils.") and MODULES[name].parent.name == "utils"
    }


def test_owners_are_found():
    # the truths the check rests on: tools, library modules and folders are owners; utils and tests are not
    assert owner(ROOT / "make_heatmap.py") == "make_heatmap.py"
    assert owner(ROOT / "pieanet" / "runtime.py") == "pieanet/runtime"
    assert owner(ROOT / "pieanet" / "heatmaps" / "ledger.py") == "pieanet/heatmaps"
    assert owner(ROOT / "models" / "inference.py") == "models"
    assert owner(ROOT / "bench" / "speed.py") == "bench"
    for path in ("utils/cli.py", "tests/test_layers.py", "examples/train_enhancer.py", "setup.py"):
        assert owner(ROOT / path) is None, path
    owners = utils_owners()
    assert {"models", "datasets", "pieanet/runtime"} <= owners["pieanet.utils.image_io"]
    # utils/safety is imported by the tools and, through utils/cli, by every tool that parses options
    assert {"score.py", "export.py"} <= owners["pieanet.utils.safety"]


def test_every_utils_module_serves_at_least_two_owners():
    found = [
        f"{name} ({MODULES[name].relative_to(ROOT)}): {', '.join(sorted(owners)) or 'no owner'}"
        for name, owners in sorted(utils_owners().items())
        if len(owners) < 2
    ]
    assert not found, "move these to their one owner (or out of utils/):\n" + "\n".join(found)
