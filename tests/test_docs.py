"""Every command in README.md and docs/*.md runs as written, as far as it can be checked cheaply.

Commands are the lines of ```sh fenced blocks and `python ...` / `pip ...` / `torchrun ...` / `p-iea-...` code spans
in the prose. Each `python SCRIPT`, `python -m MODULE`, `torchrun ... SCRIPT` and `p-iea-*` command is run up to the
point where its script has parsed its command line (argparse.ArgumentParser.parse_args is stopped right after it
returns), in one subprocess for all of them, so an option that does not exist or a value the script's own types refuse
fails here with the script's own message. Paths of the repository that a command or a Python snippet names must exist;
```python blocks must compile and their `from pieanet.X import Y` names must exist; relative links and #anchors must
resolve. The two commands README.md opens with are the ones .ci/run runs.
"""

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEAT_COMMAND = "pip install -r requirements.txt && python make_heatmap.py"
TEST_COMMAND = "pip install -r requirements-dev.txt && python -m pytest"
SHELL_LANGS = {"sh", "bash", "shell"}
KNOWN_LANGS = SHELL_LANGS | {"python", "text", "yaml"}
PROGRAMS = ("python ", "pip ", "torchrun ", "p-iea-")
# tracked folders of the checkout: a command argument or snippet string starting with one of these names a file of
# the repository, which must exist (outputs go to outputs/, data/, experiments/, results/: not checked)
REPO_DIRS = (
    "configs/",
    "checkpoints/",
    "img_to_pred/",
    "bench/",
    "examples/",
    "datasets/",
    "docs/",
    "utils/",
    "models/",
    "tests/",
    "pieanet/",
)
OUTPUT_OPTIONS = {"--output", "--out", "--json", "--markdown"}


def fenced_blocks(text):
    """(language, first line number, lines) of each ``` fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number, []
            else:
                blocks.append((lang, start, body))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"a ``` block opened at line {start} is never closed"
    return blocks


def prose(text):
    """The text outside fenced blocks."""
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.S | re.M)


def shell_commands(page):
    """(where, command tokens) of every command the page shows."""
    text = page.read_text(encoding="utf-8")
    found = []
    for lang, start, body in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        joined = "\n".join(body).replace("\\\n", " ")
        for line in joined.splitlines():
            for part in re.split(r"\s*&&\s*", line):
                tokens = shlex.split(part, comments=True)
                if tokens:
                    found.append((f"{page.name}: block at line {start}", tokens))
    for span in re.findall(r"`([^`]+)`", prose(text)):
        span = " ".join(span.split())
        if span.startswith(PROGRAMS) and len(span.split()) > 1:
            for part in re.split(r"\s*&&\s*", span):
                found.append((f"{page.name}: `{span[:60]}`", shlex.split(part)))
    return found


def python_blocks(page):
    text = page.read_text(encoding="utf-8")
    return [
        (f"{page.name}: python block at line {start}", "\n".join(body))
        for lang, start, body in fenced_blocks(text)
        if lang == "python"
    ]


def console_scripts():
    """p-iea-* command -> flat script, from pyproject.toml and pieanet/commands.py."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    functions = dict(re.findall(r'^(\w+) = _command\("(\w+)"', (ROOT / "pieanet" / "commands.py").read_text(), re.M))
    return {name: functions[target.split(":")[1]] + ".py" for name, target in scripts.items()}


def strip_env(tokens):
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]
    return tokens


def plan(where, tokens):
    """What to check for one command: a list of parse jobs for the subprocess, and a list of problems found here."""
    tokens = strip_env(tokens)
    program, args = tokens[0], tokens[1:]
    if program == "pip":
        if args[:1] != ["install"]:
            return [], [f"{where}: unexpected pip command {shlex.join(tokens)}"]
        problems = []
        for i, arg in enumerate(args):
            if i and args[i - 1] == "-r" and not (ROOT / arg).is_file():
                problems.append(f"{where}: pip install -r {arg}: no such file")
            if arg.startswith(".") and arg.split("[")[0] == "." and not (ROOT / "pyproject.toml").is_file():
                problems.append(f"{where}: pip install .: no pyproject.toml")
        return [], problems
    if program == "python":
        if args[:1] == ["-c"]:
            try:
                compile(args[1], where, "exec")
            except SyntaxError as e:
                return [], [f"{where}: python -c does not compile: {e}"]
            return [], []
        if args[:2] == ["-m", "pytest"]:  # every marker a command selects is registered in pyproject.toml
            registered = {
                line.split(":")[0]
                for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"].get(
                    "markers", []
                )
            }
            expressions = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-m" and i > 0]
            unknown = {
                name
                for expression in expressions
                for name in re.findall(r"\w+", expression)
                if name not in {"not", "and", "or"} and name not in registered
            }
            return [], [f"{where}: pytest marker {name!r} is not registered" for name in sorted(unknown)]
        if args[:1] == ["-m"]:
            module = args[1]
            in_checkout = module.removeprefix("pieanet.") if module.startswith("pieanet.") else module
            places = (in_checkout, module)  # a member beside pieanet/ (models/...), or the library inside it
            if not any((ROOT / (name.replace(".", "/") + ".py")).is_file() for name in places):
                return [], [f"{where}: python -m {module}: no such module in the checkout"]
            return [{"where": where, "kind": "module", "target": module, "argv": args[2:]}], []
        return script_job(where, args[0], args[1:])
    if program == "torchrun":  # torchrun's own options by its own parser, then the script's
        at = next((i for i, arg in enumerate(args) if arg.endswith(".py")), len(args))
        jobs, problems = script_job(where, args[at] if at < len(args) else "", args[at + 1 :])
        return [{"where": where, "kind": "torchrun", "target": "", "argv": args}, *jobs], problems
    if program in console_scripts():
        return script_job(where, console_scripts()[program], args)
    if program == "tensorboard":
        return [], []
    return [], [f"{where}: no check for the program {program!r} (add one to tests/test_docs.py)"]


def script_job(where, script, argv):
    if not script.endswith(".py") or not (ROOT / script).is_file():
        return [], [f"{where}: script {script!r} not found in the checkout"]
    return [{"where": where, "kind": "script", "target": str(ROOT / script), "argv": argv}], []


def named_paths(where, tokens):
    """Problems with repository paths (and ../shared paths, when ../shared exists) that a command names."""
    problems = []
    tokens = strip_env(tokens)
    for i, token in enumerate(tokens):
        if i and tokens[i - 1] in OUTPUT_OPTIONS:
            continue
        path = token.split("=", 1)[1] if re.match(r"[\w.]+=", token) else token
        if path.startswith(REPO_DIRS) and not (ROOT / path).exists():
            problems.append(f"{where}: {path} does not exist")
        if path.startswith("../shared/") and SHARED.is_dir() and not (ROOT / path).exists():
            problems.append(f"{where}: {path} does not exist in ../shared")
    if "--data-root" in tokens and "--csv" in tokens:
        root = ROOT / tokens[tokens.index("--data-root") + 1]
        csv = tokens[tokens.index("--csv") + 1]
        if root.is_dir() and not (root / csv).is_file():
            problems.append(f"{where}: {csv} is not in {root}")
    return problems


# Runs every parse job in one process (torch is imported once): parse_args is stopped right after it returns, so no
# job does any work; a parse error is the script's own argparse message.
RUNNER = r"""
import argparse, contextlib, io, json, os, runpy, sys
jobs = json.load(sys.stdin)


class Parsed(BaseException):
    pass


original = argparse.ArgumentParser.parse_args
original_known = argparse.ArgumentParser.parse_known_args
inside = [0]


def parse_args(self, args=None, namespace=None):
    inside[0] += 1
    try:
        original(self, args, namespace)
    finally:
        inside[0] -= 1
    raise Parsed()


def parse_known_args(self, args=None, namespace=None):
    result = original_known(self, args, namespace)
    if inside[0] == 0:  # a script's own parse_known_args call: stop there too, never run the job
        raise Parsed()
    return result


argparse.ArgumentParser.parse_args = parse_args
argparse.ArgumentParser.parse_known_args = parse_known_args
results = []
base_path = list(sys.path)
for job in jobs:
    stderr = io.StringIO()
    outcome = "the command ended without parsing its command line"
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if job["kind"] == "torchrun":
                from torch.distributed.run import get_args_parser
                get_args_parser().parse_args(job["argv"])
            elif job["kind"] == "module":
                sys.argv = [job["target"], *job["argv"]]
                sys.path[:] = [os.getcwd(), *base_path[1:]]
                runpy.run_module(job["target"], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [job["target"], *job["argv"]]
                sys.path[:] = [os.path.dirname(job["target"]), *base_path[1:]]
                runpy.run_path(job["target"], run_name="__main__")
    except Parsed:
        outcome = "ok"
    except SystemExit as e:
        lines = stderr.getvalue().strip().splitlines() or [""]
        outcome = f"exit {e.code}: " + next((line for line in lines if "error" in line), lines[-1])
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    results.append(outcome)
print(json.dumps(results))
"""


def all_commands():
    return [found for page in PAGES for found in shell_commands(page)]


def test_readme_opens_with_the_two_commands_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lang, _, body = fenced_blocks(text)[0]
    assert lang in SHELL_LANGS and body == [HEAT_COMMAND, TEST_COMMAND]
    before = text[: text.index("```")]
    assert not before.strip("\n").count("\n"), "only the title may come before the two commands"
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == TEST_COMMAND


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_every_code_block_says_what_it_holds():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for lang, start, _ in fenced_blocks(text):
            assert lang in KNOWN_LANGS, f"{page.name}: block at line {start} is ```{lang} (one of {KNOWN_LANGS})"
        # an indented command outside a fence would escape these checks
        for number, line in enumerate(prose(text).splitlines(), 1):
            assert not re.match(r"( {4,}|\t)(python|pip|torchrun|p-iea-)\b", line), (
                f"{page.name}: an indented command (put it in a ```sh block): {line.strip()}"
            )


def test_commands_parse_and_name_existing_files():
    commands = all_commands()
    assert len(commands) > 30  # the extraction sees the pages' commands
    jobs, problems = [], []
    for where, tokens in commands:
        new_jobs, new_problems = plan(where, tokens)
        jobs += new_jobs
        problems += new_problems + named_paths(where, tokens)
    # one job per distinct command line
    unique = list({(job["kind"], job["target"], tuple(job["argv"])): job for job in jobs}.values())
    done = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(unique), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    problems += [
        f"{job['where']}: {Path(job['target']).name} {shlex.join(job['argv'])}: {outcome}"
        for job, outcome in zip(unique, outcomes)
        if outcome != "ok"
    ]
    assert not problems, "\n".join(problems)


def test_a_wrong_option_is_caught():
    """The runner itself: an option the script lacks and a value its type refuses both fail; a good line passes.
    (--vmax 13: beyond any scale, residual or, with --map stops, stops; 2 is a valid scale in stops since issue 28.)"""
    jobs = [
        {"kind": "script", "target": str(ROOT / "make_heatmap.py"), "argv": argv}
        for argv in (["--no-such-option"], ["--vmax", "13"], ["--vmax", "0.3", "--overlay"])
    ]
    jobs.append({"kind": "torchrun", "target": "", "argv": ["--no-such-option", "make_heatmap.py"]})
    done = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(jobs), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes[0].startswith("exit 2") and "--no-such-option" in outcomes[0]
    assert outcomes[1].startswith("exit 2") and "vmax" in outcomes[1]
    assert outcomes[2] == "ok"
    assert outcomes[3].startswith("exit 2")


def test_python_blocks_compile_and_import_what_exists():
    problems = []
    for page in PAGES:
        for where, source in python_blocks(page):
            tree = ast.parse(source, where)  # a syntax error fails here, naming the block
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pieanet"):
                    parts = node.module.split(".")[1:]
                    base = ROOT.joinpath(*parts) if parts else ROOT / "pieanet"
                    module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
                    if not module.is_file():
                        problems.append(f"{where}: no module {node.module}")
                        continue
                    defined = top_level_names(module)
                    problems += [
                        f"{where}: {node.module} has no {alias.name}"
                        for alias in node.names
                        if alias.name not in defined and not (base / f"{alias.name}.py").is_file()
                    ]
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith(REPO_DIRS)
                    and not (ROOT / node.value).exists()
                ):
                    problems.append(f"{where}: {node.value} does not exist")
    assert not problems, "\n".join(problems)


def top_level_names(module):
    """The names ``module`` defines at its top level, as a static checker sees them: also inside ``if`` blocks (e.g.
    ``if TYPE_CHECKING:``), and those of a project module it star-imports (models/__init__.py shows loading.py's)."""
    names = set()
    body = list(ast.parse(module.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If):
            body += node.body + node.orelse
        elif (
            isinstance(node, ast.ImportFrom)
            and [alias.name for alias in node.names] == ["*"]
            and (node.module or "").startswith("pieanet.")
        ):
            names |= top_level_names(ROOT.joinpath(*node.module.split(".")[1:]).with_suffix(".py"))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def slug(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {
        slug(line.lstrip("#"))
        for line in prose(page.read_text(encoding="utf-8")).splitlines()
        if re.match(r"#{1,6} ", line)
    }


def test_links_resolve():
    problems = []
    for page in [*PAGES, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                problems.append(f"{page.name}: link to {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{page.name}: link to {target}: no such heading")
    assert not problems, "\n".join(problems)
