"""Running a packaging script for the slow tests: its log kept beside its report, the report read back."""

from __future__ import annotations

import subprocess
from pathlib import Path


def read_report(path: Path) -> dict[str, str]:
    """The script's ``key=value`` report."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def run_build(args: list[str], cwd: Path, work: Path, name: str) -> dict[str, str]:
    """Run the script ``args``; fail with the tail of its output (kept in work/test-build.log); its report."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=3500)
    log = work / "test-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}); see {log}:\n{proc.stdout[-3000:]}" \
                                 f"\n{proc.stderr[-3000:]}"
    return read_report(work / "report.txt")
