"""The package's structure (docs/architecture.md, "The package: folders by role"): no import
cycle, no arrow back up the layers, no module name used twice, no logic in an __init__.py;
importing the package changes no process-wide state."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_package_structure_holds():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_structure.py"), str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks: all pass" in proc.stdout


# Imports every module of the package in a fresh interpreter and names each warnings filter set
# while doing so by a file of the package (third-party libraries set their own on import).
_FILTERS_SET_ON_IMPORT = """
import importlib, pkgutil, sys, warnings
import mgpipe
setters = []
def recording(real):
    def record(*args, **kwargs):
        setters.append(sys._getframe(1).f_code.co_filename)
        return real(*args, **kwargs)
    return record
warnings.filterwarnings = recording(warnings.filterwarnings)
warnings.simplefilter = recording(warnings.simplefilter)
for m in pkgutil.walk_packages(mgpipe.__path__, "mgpipe."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print(sorted({f for f in setters if f.startswith(mgpipe.__path__[0])}))
"""


def test_importing_the_package_installs_no_warnings_filter():
    """A library that silences a warning on import silences it for its caller's whole process:
    mgpipe scopes each filter to the call that warns (warnings.catch_warnings)."""
    proc = subprocess.run([sys.executable, "-c", _FILTERS_SET_ON_IMPORT], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout
