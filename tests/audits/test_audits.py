"""The audits as tests of this checkout: every case of every class clean, every mutation caught.

Behind the `audit` marker (tests/audits/conftest.py): `python -m pytest -m audit` runs them all (about an hour on a
loaded 2-core machine), `-m audit -k disk` one audit, `-k "files and 11"` one class. The mutation harness tests the
committed tree (a `git worktree` of HEAD), not uncommitted changes.
"""

from pathlib import Path

import pytest

from . import audit_disk, audit_files, audit_inputs, mutations

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.audit, pytest.mark.slow, pytest.mark.subprocess]


def unclean(results):
    return [f"{r['class']} {r['case']}: {r['verdict']} {r.get('note', '')}" for r in results if r["verdict"] != "clean"]


@pytest.mark.parametrize("klass", ["1", "1b", "2", "3", "4", "5", "9", "11"])
def test_files_audit(klass):
    results = audit_files.Audit(ROOT, 180, [klass], minimal=True).run()
    assert results, f"class {klass} ran no case"
    assert not unclean(results), "\n".join(unclean(results))


@pytest.mark.parametrize("klass", [6, 7, 8, 10])
def test_inputs_audit(klass):
    results = [dict(zip(("class", "case", "verdict", "note"), r)) for r in audit_inputs.run_audit(ROOT, [klass])]
    assert results, f"class {klass} ran no case"
    assert not unclean(results), "\n".join(unclean(results))


@pytest.mark.parametrize("klass", list(audit_disk.CLASSES))
def test_disk_audit(klass):
    results = audit_disk.run_audit(ROOT, 120, [klass])
    assert results, f"class {klass} ran no case"
    assert not unclean(results), "\n".join(unclean(results))


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=[m[0] for m in mutations.MUTATIONS])
def test_mutation_is_caught(mutation, tmp_path):
    verdict, outcome = mutations.run(mutation, tmp_path / "tree")
    assert verdict == "CAUGHT", outcome
