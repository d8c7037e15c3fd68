"""Each stage's code digest covers exactly the mgpipe modules the stage runs (issue 25, item 11):
found by reading the imports (mgpipe/code_deps.py), not from a hand-kept list."""

from pathlib import Path

import pytest

from mgpipe import code_deps, config

STAGES = sorted(code_deps.STAGE_ENTRY)


def _edited(target: Path):
    original = code_deps.read_source

    def read(path):
        data = original(path)
        return data + b"\n# edited\n" if Path(path) == target else data
    return read


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_changes_its_digest(stage, monkeypatch):
    package = code_deps.Package()
    before = config.code_digest(stage)
    modules = code_deps.stage_modules(stage)
    assert f"mgpipe.{code_deps.STAGE_ENTRY[stage]}" in modules
    changed, unchanged = [], []
    for module in package.files:
        with monkeypatch.context() as m:
            m.setattr(code_deps, "read_source", _edited(package.files[module]))
            (changed if config.code_digest(stage) != before else unchanged).append(module)
    # every module the stage imports changes its digest, and no other module does
    assert sorted(changed) == modules
    assert set(unchanged) == set(package.files) - set(modules)
    assert unchanged, "some module of mgpipe is outside every stage"


def test_the_modules_the_old_hand_kept_list_left_out_are_covered():
    train, test = code_deps.stage_modules("train"), code_deps.stage_modules("test")
    for module in ("learning.imbalance", "stages.clips", "io", "runtime"):
        assert f"mgpipe.{module}" in train
    assert "mgpipe.learning.imbalance" in test
    # the pose stage runs its backends in a subprocess (`python -m mgpipe.pose.backends.worker`,
    # which imports mgpipe.pose.backends.<name>_backend by name)
    assert {"mgpipe.pose.backends.worker", "mgpipe.pose.backends.mediapipe_backend"} <= set(
        code_deps.stage_modules("pose"))
    # a stage does not run the others' code
    assert "mgpipe.stages.train" not in code_deps.stage_modules("decode")
    assert "mgpipe.stages.ensemble" not in train


def test_the_analysis_follows_any_folder_structure(tmp_path):
    """Lazy imports inside functions, relative imports of any level, `from pkg import sub`,
    parents' __init__.py, and importlib names, in a package regrouped into subfolders."""
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "entry.py": "from .stages import fit\n\ndef run():\n    from .core.io import write\n",
        "stages/__init__.py": "",
        "stages/fit.py": "def f():\n    from ..core import loss\n    import importlib\n"
                         "    return importlib.import_module(f'pkg.plugins.{name}_x')\n",
        "core/__init__.py": "",
        "core/io.py": "",
        "core/loss.py": "from . import weights\n",
        "core/weights.py": "",
        "plugins/__init__.py": "",
        "plugins/a_x.py": "",
        "unused.py": "",
        "core/unused.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    package = code_deps.Package(root, "pkg")
    assert package.closure("pkg.entry") == sorted([
        "pkg", "pkg.entry", "pkg.stages", "pkg.stages.fit", "pkg.core", "pkg.core.io",
        "pkg.core.loss", "pkg.core.weights", "pkg.plugins", "pkg.plugins.a_x"])
    before = package.digest(package.closure("pkg.entry"))
    (root / "core/weights.py").write_text("x = 1\n")
    assert package.digest(package.closure("pkg.entry")) != before
    after = package.digest(package.closure("pkg.entry"))
    (root / "core/unused.py").write_text("x = 1\n")
    assert package.digest(package.closure("pkg.entry")) == after
