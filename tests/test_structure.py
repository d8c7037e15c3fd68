"""The package's structure (docs/architecture.md, "The package: folders by role"): no import
cycle, no arrow back up the layers, no module name used twice, no logic in an __init__.py."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_package_structure_holds():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_structure.py"), str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks: all pass" in proc.stdout
