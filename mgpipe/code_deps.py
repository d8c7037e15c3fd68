"""The code a stage runs: the mgpipe modules its entry module imports, found by reading them.

Snakemake does not notice edits to an imported package, so every rule carries a digest of the
code its stage runs (config.code_digest): editing any module the stage runs reruns that stage
and, through its new output, everything downstream, and nothing upstream. The modules are not
listed by hand (a hand-kept list drifts: one left learning/imbalance.py out of training). They are found
by static analysis (Python's `ast`, nothing imported or run, so the result is deterministic and
cheap), transitively from the stage's entry module, within the package:

- `import <package>.a.b`, `from <package>.a import b`, `from . import b`, `from ..a import b` at
  module level and inside functions (the stages import lazily); importing a module also runs
  the `__init__.py` of every package above it;
- a string naming a module of the package (`"mgpipe.pose.backends.worker"`, run as
  `python -m ...` in a subprocess), and an f-string that starts with a package's dotted name
  (`f"mgpipe.pose.backends.{backend}_backend"`, imported by importlib): every module of that
  package.

Modules are found by name under the package's folder, so the analysis holds whatever the
package's folder structure (subpackages included).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "mgpipe"
ROOT = Path(__file__).resolve().parent

# Each stage's entry module: the one its `mgpipe <command>` calls into (cli.py only parses the
# command line, and is shared by every stage: an edit there would rerun all of them).
# (Written relative to the package: as full dotted names these strings would count as
# references of this module, which config.code_digest, and so training, imports.)
STAGE_ENTRY = {"demo_data": "tools.demo_data", "clips": "stages.clips", "decode": "stages.decode",
               "pose": "stages.pose", "heatmaps": "pose.heatmap_render", "shards": "stages.shards",
               "train": "stages.train", "pretrain": "stages.pretrain", "merge": "stages.merge", "test": "stages.score",
               "ensemble": "stages.ensemble", "skeleton_sources": "sources.skeleton_sources"}


def read_source(path: Path) -> bytes:
    """A module's bytes (the one place the analysis and the digest read a file)."""
    return Path(path).read_bytes()


_REFERENCES: dict = {}   # (root, module, sha256 of its source) -> its references: parsed once


class Package:
    """The modules of a package folder by dotted name ({name: file})."""

    def __init__(self, root: Path = ROOT, name: str = PACKAGE):
        self.root, self.name = Path(root), name
        self.files: dict[str, Path] = {}
        for f in sorted(self.root.rglob("*.py")):
            parts = f.relative_to(self.root).with_suffix("").parts
            if any(not p.isidentifier() for p in parts):
                continue   # not importable (a copy, a script with a dash)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            self.files[".".join((name, *parts))] = f

    def is_package(self, module: str) -> bool:
        return module in self.files and self.files[module].name == "__init__.py"

    def parents(self, module: str) -> list[str]:
        parts = module.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in self.files]

    def under(self, package: str) -> list[str]:
        return [m for m in self.files if m == package or m.startswith(package + ".")]

    def references(self, module: str, source: bytes) -> set[str]:
        """The package's modules that `module` (of bytes `source`) imports or names."""
        key = (str(self.root), module, hashlib.sha256(source).digest())
        if key not in _REFERENCES:
            _REFERENCES[key] = frozenset(self._references(module, source))
        return set(_REFERENCES[key])

    def _references(self, module: str, source: bytes) -> set[str]:
        tree = ast.parse(source, filename=str(self.files[module]))
        here = module if self.is_package(module) else module.rpartition(".")[0]
        found: set[str] = set()

        def add(name: str):
            if name in self.files:
                found.add(name)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    for i in range(1, len(parts) + 1):   # `import a.b.c` runs a, a.b and a.b.c
                        add(".".join(parts[:i]))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                add(target)
                for alias in node.names:   # `from pkg import sub` imports a submodule
                    add(f"{target}.{alias.name}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                add(node.value)
            elif isinstance(node, ast.JoinedStr) and node.values:
                head = node.values[0]
                if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.endswith("."):
                    package = head.value[:-1]
                    if self.is_package(package):
                        found.update(self.under(package))
        return found

    def closure(self, entry: str, read=None) -> list[str]:
        """Every module of the package that running `entry` may execute, sorted."""
        read = read or read_source
        todo, seen = [entry], set()
        while todo:
            module = todo.pop()
            if module in seen or module not in self.files:
                continue
            seen.add(module)
            todo += self.parents(module)
            todo += sorted(self.references(module, read(self.files[module])))
        return sorted(seen)

    def digest(self, modules, read=None) -> str:
        read = read or read_source
        h = hashlib.sha256()
        for module in sorted(modules):
            h.update(module.encode() + b"\0")
            h.update(read(self.files[module]))
        return h.hexdigest()[:16]


def stage_modules(stage: str, package: Package | None = None) -> list[str]:
    """The modules stage `stage` runs (KeyError for an unknown stage)."""
    package = package or Package()
    return package.closure(f"{package.name}.{STAGE_ENTRY[stage]}")


def stage_digest(stage: str, package: Package | None = None) -> str:
    package = package or Package()
    return package.digest(stage_modules(stage, package))
