#!/usr/bin/env python3
"""Fails when the top-level modules of src/ import each other in a cycle.

An edge A -> B is any `crate::B` path (in a `use` or inline) in a file of module A
(`src/A.rs` or `src/A/**.rs`), including the names of a grouped `use crate::{B, C::x}`.
`src/lib.rs` and `src/main.rs` only wire modules together and are left out. On a cycle,
prints each strongly connected component of more than one module and exits 1.
"""

import pathlib
import re
import sys

SRC = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
COMMENT = re.compile(r"//[^\n]*")
INLINE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{")


def top_level(path: pathlib.Path) -> str | None:
    parts = path.relative_to(SRC).parts
    if len(parts) == 1:
        name = parts[0].removesuffix(".rs")
        return None if name in ("lib", "main") else name
    return parts[0]


def group_names(text: str, start: int) -> list[str]:
    """The first-level names of the brace group opening at `start`."""
    depth, item, names = 0, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                names.append(item)
                break
        if depth == 1 and ch == ",":
            names.append(item)
            item = ""
        elif depth >= 1:
            item += ch
    found = []
    for name in names:
        match = re.match(r"\s*([a-z_][a-z0-9_]*)", name)
        if match and match.group(1) != "self":
            found.append(match.group(1))
    return found


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = top_level(path)
        if module is None:
            continue
        text = COMMENT.sub("", path.read_text())
        targets = set(INLINE.findall(text))
        for match in GROUP.finditer(text):
            targets.update(group_names(text, match.end() - 1))
        graph.setdefault(module, set()).update(t for t in targets if t != module)
    modules = set(graph)
    return {m: {t for t in ts if t in modules} for m, ts in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = edges()
    found = cycles(graph)
    if not found:
        print(f"module graph: {len(graph)} top-level modules, no cycle")
        return 0
    for component in found:
        members = set(component)
        print(f"import cycle of {len(component)} modules: {', '.join(component)}")
        for module in component:
            inside = sorted(graph[module] & members)
            print(f"  {module} -> {', '.join(inside)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
