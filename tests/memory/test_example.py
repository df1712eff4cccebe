"""examples/agents.py runs (small): planner and workers as separate programs sharing memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_agents_example_runs_small(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "agents.py"),
            str(tmp_path / "store"),
            "--workers",
            "3",
            "--rounds",
            "10",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "skill uses 30, site visits 30, episodes 30" in out.stdout
    assert "merged fact" in out.stdout and "context for a new agent:" in out.stdout
    assert out.stdout.rstrip().endswith("OK")
