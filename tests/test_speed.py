import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_reports_every_measurement(tmp_path):
    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--smoke", "--threads", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    project, released = report["models"]["project"], report["models"]["released"]
    assert released["parameters"] == 624_263  # the released architecture, with or without its weights
    assert 78 < released["gflop_per_256"] < 80
    assert project["parameters"] > 0 and 0 < project["gflop_per_256"] < released["gflop_per_256"]
    assert project["images_per_s_256"] > 0 and released["images_per_s_256"] is None  # not run in smoke mode
    assert report["ratios"]["gflop_256"] == released["gflop_per_256"] / project["gflop_per_256"]
    assert len(report["latency"]) == 2
    for row in report["latency"]:
        assert "error" not in row, row
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["rss_before_mb"] > 50
    assert "project / released" in done.stdout
