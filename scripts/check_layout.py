#!/usr/bin/env python3
"""Checks the shape of src/: module dependencies point one way, and src/lib.rs's layout map
names every module.

A module is a file under src/ (src/rules/mod.rs is `rules`, src/rules/normalize.rs is
`rules::normalize`). Its dependencies are the `crate::…` paths it uses outside `#[cfg(test)]`
items (a `use crate::{a, b::c}` group counts each path). Dependencies are compared at the
top level (`rules::normalize` counts as `rules`): two top-level modules that use each other, or
a longer loop, is a cycle. A module's use of its own children or parent is not an edge.

Exit status 0 when both hold, 1 otherwise, with what is wrong on stderr. Used by .ci/run.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Binaries and generated code are not modules of the library.
NOT_MODULES = {"main"}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def strip_cfg_test(text: str) -> str:
    """Removes every item that follows `#[cfg(test)]`: a `mod x;` line or a braced block."""
    out = []
    i = 0
    marker = re.compile(r"#\[cfg\(test\)\]")
    while True:
        m = marker.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        j = m.end()
        # The item ends at the first `;` before any `{`, or at the matching `}`.
        depth = 0
        while j < len(text):
            c = text[j]
            if c == ";" and depth == 0:
                j += 1
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            j += 1
        i = j
    return "".join(out)


def expand_use_groups(text: str) -> list:
    """Every `crate::a::b` path, with `use crate::{x, y::{z}}` groups expanded."""
    paths = []
    for m in re.finditer(r"\bcrate((?:::\w+)*)(::\{)?", text):
        prefix = m.group(1)
        if not m.group(2):
            paths.append(prefix)
            continue
        # A brace group: walk to its matching brace and expand it.
        start = m.end()
        depth, j = 1, start
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        paths.extend(prefix + "::" + p if p else prefix for p in split_group(text[start : j - 1]))
    return paths


def split_group(body: str) -> list:
    items, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        cur += c
    items.append(cur)
    out = []
    for item in (x.strip() for x in items):
        if not item:
            continue
        if "::{" in item:
            head, rest = item.split("::{", 1)
            out.extend(head + "::" + p for p in split_group(rest.rsplit("}", 1)[0]))
        else:
            out.append(item.split(" as ")[0].strip())
    return out


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs"))
    modules = {}
    for path in files:
        name = module_name(path)
        if name in NOT_MODULES or name == "":
            continue
        # A tests.rs (or tests/ directory) beside a module is that module's #[cfg(test)] child.
        if "tests" in name.split("::") or name.endswith("test_yaml"):
            continue
        modules[name] = path
    top = {name.split("::")[0] for name in modules}

    edges = {t: set() for t in top}
    where = {}
    for name, path in modules.items():
        text = strip_cfg_test(strip_comments(path.read_text()))
        src_top = name.split("::")[0]
        for p in expand_use_groups(text):
            first = p.strip(":").split("::")[0] if p.strip(":") else ""
            if first in top and first != src_top:
                edges[src_top].add(first)
                where.setdefault((src_top, first), f"{path.relative_to(ROOT)}: crate{p}")

    problems = []
    # Cycles among top-level modules (depth-first search).
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == "open":
                loop = stack[stack.index(m) :] + [m]
                problems.append(
                    "dependency cycle: "
                    + " -> ".join(loop)
                    + "\n    "
                    + "\n    ".join(where[(a, b)] for a, b in zip(loop, loop[1:]))
                )
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(top):
        if n not in state:
            visit(n)

    # The layout map at the top of lib.rs names every module as `name`.
    lib = (SRC / "lib.rs").read_text()
    doc = "\n".join(line[3:] for line in lib.splitlines() if line.startswith("//!"))
    named = set(re.findall(r"`([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)`", doc))
    for name in sorted(modules):
        if name not in named:
            problems.append(f"the layout map in src/lib.rs does not name module `{name}`")

    for p in problems:
        print(p, file=sys.stderr)
    print(
        f"{len(modules)} modules, {sum(len(v) for v in edges.values())} top-level dependencies, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
