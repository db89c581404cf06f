#!/usr/bin/env python3
"""Fails if the Rust files under src/ import each other in a cycle (run by `make lint`).

Each file is a node; an edge a -> b means a names an item of b (`use crate::x::y`, `super::z`, or a path
such as `crate::x::y::f(...)` in code). A module's `mod.rs` declaring its children (`pub mod child;`) is
not an import. Test modules (`#[cfg(test)]` to the end of the file) are left out: tests may use anything.
Prints every cycle found, shortest first, as `a.rs -> b.rs -> a.rs`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_of(file: Path) -> list[str]:
    parts = list(file.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def file_of(parts: list[str]) -> Path | None:
    """The file that defines the longest module prefix of `parts`."""
    for n in range(len(parts), -1, -1):
        prefix = parts[:n]
        for candidate in (SRC.joinpath(*prefix).with_suffix(".rs") if prefix else SRC / "lib.rs",
                          SRC.joinpath(*prefix, "mod.rs")):
            if candidate.is_file():
                return candidate
    return None


def resolve(file: Path, root: str, rest: list[str]) -> list[str]:
    here = module_of(file)
    if root == "crate":
        return rest
    # `super` in a mod.rs/lib.rs is the parent of the module the file defines; in x.rs, x's parent.
    base = here if root == "self" else here[:-1]
    while rest and rest[0] == "super":
        base, rest = base[:-1], rest[1:]
    return base + rest


def edges(file: Path) -> set[Path]:
    text = file.read_text()
    text = text.split("#[cfg(test)]", 1)[0]
    text = re.sub(r"//[^\n]*", "", text)
    found: set[Path] = set()
    paths: list[tuple[str, list[str]]] = []
    for root, prefix, inner in GROUP.findall(text):
        base = [p for p in prefix.split("::") if p]
        for item in re.split(r"[,\s]+", re.sub(r"\{[^}]*\}", "", inner)):
            item = item.split(" as ")[0].strip()
            if item and item != "self":
                paths.append((root, base + item.split("::")))
            elif item == "self":
                paths.append((root, base))
    for root, rest in PATH.findall(text):
        paths.append((root, [p for p in rest.split("::") if p]))
    for root, rest in paths:
        target = file_of(resolve(file, root, rest))
        if target is not None and target != file and not declares_child(target, file):
            found.add(target)
    return found


def declares_child(parent: Path, child: Path) -> bool:
    """`parent` is the mod.rs/lib.rs of a module that `child` belongs to (a parent naming its children)."""
    return parent.name in ("mod.rs", "lib.rs") and child.is_relative_to(parent.parent)


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    out: list[list[Path]] = []
    for start in graph:
        # Breadth-first search for the shortest way back to `start`.
        frontier = [[start]]
        seen = {start}
        while frontier:
            nxt = []
            for path in frontier:
                for b in graph.get(path[-1], ()):
                    if b == start:
                        cycle = path + [start]
                        key = frozenset(cycle)
                        if not any(frozenset(c) == key for c in out):
                            out.append(cycle)
                    elif b not in seen:
                        seen.add(b)
                        nxt.append(path + [b])
            frontier = nxt if not any(c[0] == start for c in out) else []
    return sorted(out, key=len)


def main() -> int:
    files = sorted(SRC.rglob("*.rs"))
    graph = {f: edges(f) for f in files}
    found = cycles(graph)
    for cycle in found:
        print("import cycle: " + " -> ".join(str(p.relative_to(SRC)) for p in cycle))
    if found:
        return 1
    print(f"no import cycles among {len(files)} files in src/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
