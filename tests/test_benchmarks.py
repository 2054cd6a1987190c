"""The GPU benchmark scripts of issue 9 run end to end on the CPU at tiny sizes (plumbing, not numbers)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script,expected_rows", [("inference.py", 4), ("train_ladder.py", 6)])
def test_benchmark_script_tiny_cpu_run(tmp_path, script, expected_rows):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == expected_rows
    assert all(("median_s" in r and r["median_s"] > 0) for r in rows), rows
