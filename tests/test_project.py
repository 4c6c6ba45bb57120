"""Project promises that are cheap to check: citation metadata, CI runs the README's test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_citation_cff_is_valid():
    result = subprocess.run(
        [Path(sys.executable).parent / "cffconvert", "--validate", "-i", ROOT / "CITATION.cff"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "arXiv:2502.17607" in (ROOT / "CITATION.cff").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make quickstart" in readme
    assert "\nmake test\n" in (ROOT / ".ci/run").read_text()
