#!/usr/bin/env python3
"""Structure check of the mgpipe package (issue 27): `python scripts/check_structure.py [REPO]`.

Prints modules per folder, the longest functions, the import graph's depth (longest chain of
intra-package imports, lazy ones included) and duplicate module names; then checks
- no import cycle (module level) and no cycle between folders,
- no arrow back up: an import goes to the same or a lower layer (LAYERS below),
- no module name used twice (file basenames; __init__ / __main__ aside),
- no logic in an __init__.py (a docstring, and __version__ in mgpipe/__init__.py, only).
Exit 1 when a check fails (the figures are printed either way). `--figures` prints figures only.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter, defaultdict
from pathlib import Path

# Higher number = higher layer. An import may go to its own layer or below, never above.
LAYERS = [
    (6, ["mgpipe.cli", "mgpipe.__main__", "mgpipe.api"]),   # the entry points: command line, Python
    (5, ["mgpipe.stages", "mgpipe.plan"]),                  # (plan: the workflow's plan-time checks)
    (4, ["mgpipe.tools"]),
    (3, ["mgpipe.learning", "mgpipe.pose", "mgpipe.sources"]),
    (2, ["mgpipe.models", "mgpipe.formats"]),
    (1, ["mgpipe.config", "mgpipe.layouts", "mgpipe.code_deps"]),
    (0, ["mgpipe.io", "mgpipe.runtime", "mgpipe.compat", "mgpipe"]),   # (compat: one install's torchvision)
]


def layer_of(mod: str):
    best = None
    for level, prefixes in LAYERS:
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (level, p)
    return best[0] if best else None


def modules(repo: Path) -> dict:
    out = {}
    for p in sorted((repo / "mgpipe").rglob("*.py")):
        parts = list(p.relative_to(repo).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (p, is_pkg)
    return out


def imports(mods: dict) -> dict:
    graph = {}
    for m, (p, is_pkg) in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (n.level - 1)]
                    b = ".".join(base + ([n.module] if n.module else []))
                else:
                    b = n.module or ""
                if not b.startswith("mgpipe"):
                    continue
                for a in n.names:
                    names.append(f"{b}.{a.name}" if f"{b}.{a.name}" in mods else b)
            elif isinstance(n, ast.Import):
                names = [a.name for a in n.names if a.name.startswith("mgpipe")]
            for d in names:
                while d not in mods and "." in d:
                    d = d.rsplit(".", 1)[0]
                if d != m and d in mods:
                    deps.add(d)
        graph[m] = deps
    return graph


def folder(m: str) -> str:
    parts = m.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 else m


def find_cycles(graph: dict) -> list:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def depth(graph: dict) -> tuple[int, list]:
    memo = {}

    def d(v):
        if v not in memo:
            memo[v] = (0, [v])
            best = (0, [v])
            for w in graph[v]:
                dw, pw = d(w)
                if dw + 1 > best[0]:
                    best = (dw + 1, [v] + pw)
            memo[v] = best
        return memo[v]

    return max((d(v) for v in graph), key=lambda t: t[0])


def functions(mods: dict) -> list:
    out = []
    for m, (p, _) in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((n.end_lineno - n.lineno + 1, f"{m.replace('mgpipe.', '', 1)}.{n.name}"))
    return sorted(out, reverse=True)


def init_logic(mods: dict) -> list:
    bad = []
    for m, (p, is_pkg) in mods.items():
        if not is_pkg:
            continue
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str):
                continue
            if m == "mgpipe" and isinstance(n, ast.Assign) and [getattr(t, "id", "") for t in n.targets] == ["__version__"]:
                continue
            bad.append(f"{p}:{n.lineno}: {type(n).__name__}")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser()
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("repo", type=Path, nargs="?", default=here if (here / "mgpipe").is_dir() else Path("."))
    ap.add_argument("--figures", action="store_true", help="figures only, no verdict")
    args = ap.parse_args(argv)
    mods = modules(args.repo.resolve())
    graph = imports(mods)

    per_folder = Counter(folder(m) if not mods[m][1] else m for m in mods)
    print("modules per folder (files, __init__ included):")
    for f, n in sorted(per_folder.items()):
        print(f"  {n:3d}  {f.replace('.', '/')}/")
    print(f"  {len(mods):3d}  in all")
    fns = functions(mods)
    lengths = sorted(n for n, _ in fns)
    print(f"functions: {len(fns)}, median {lengths[len(lengths) // 2]} lines; longest:")
    for n, name in fns[:8]:
        print(f"  {n:4d}  {name}")
    dmax, chain = depth(graph)
    print(f"import graph: {sum(map(len, graph.values()))} edges, depth {dmax} ({dmax + 1} floors): "
          + " -> ".join(c.replace("mgpipe.", "", 1) for c in chain))
    names = Counter(m.rsplit(".", 1)[-1] for m, (p, pkg) in mods.items() if not pkg and not m.endswith("__main__"))
    dups = sorted(n for n, c in names.items() if c > 1)
    print("duplicate module names:", ", ".join(f"{n} ({', '.join(m for m in mods if m.endswith('.' + n))})"
                                                for n in dups) or "none")
    if args.figures:
        return 0

    problems = []
    for c in find_cycles(graph):
        problems.append("import cycle: " + " <-> ".join(c))
    fgraph = defaultdict(set)
    for m, deps in graph.items():
        for d in deps:
            fm, fd = folder(m), folder(d)
            if fm != fd and not fm.startswith(fd + ".") and not fd.startswith(fm + ".") and fd != "mgpipe":
                fgraph[fm].add(fd)
    for c in find_cycles(dict(fgraph)):
        problems.append("folder cycle: " + " <-> ".join(c))
    for m, deps in sorted(graph.items()):
        lm = layer_of(m)
        if lm is None:
            problems.append(f"{m}: in no layer of check.LAYERS")
            continue
        for d in sorted(deps):
            ld = layer_of(d)
            if ld is not None and ld > lm:
                problems.append(f"arrow up: {m} (layer {lm}) imports {d} (layer {ld})")
    problems += [f"duplicate module name: {n}" for n in dups]
    problems += [f"logic in __init__: {b}" for b in init_logic(mods)]
    print("checks:", "all pass" if not problems else f"{len(problems)} problems")
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
