#!/usr/bin/env python3
"""Lists the import cycles between the files of a Rust crate's `src/`.

    scripts/import-cycles.py            # the crate this script lives in
    scripts/import-cycles.py SRC_DIR    # another tree
    scripts/import-cycles.py --self-test

Prints one line per cycle (`a.rs -> b.rs -> a.rs`) and exits 1 if there is
any, 0 if there is none. Python 3.11, standard library only.

Why: a file should be readable knowing only the files it imports. When two
files import each other, neither can be read (or changed) first; the issue
that asked for this script found `framing/message.rs` importing the decoder
that imports it, and `chat/session.rs` an `impl` block of `service.rs`.

What counts as an edge from file A to file B:

* a `use` declaration in A (any visibility, grouped trees expanded), or a
  path written in A's code, that starts with `crate::`, `super::` or
  `self::` and names B's module, or an item B defines;
* a path that names an item a module only re-exports (`pub use x::Item`) is
  followed to the file that defines it, so a re-export in a `mod.rs` does
  not hide a cycle between siblings (nor create one through the `mod.rs`);
* a file naming a module below its own (a `mod.rs` or `lib.rs` using its
  children) is not an edge: a parent owns its children, declares them with
  `mod`, and drives them; only the other direction (a child using what its
  parent defines, `super::Config`) is. Bare child paths (`connection::serve`
  in `server/mod.rs`) are therefore not looked at either.
* inline modules (`mod tests { use super::*; }`) belong to their file:
  `super` inside them is the file itself, and a file is never its own edge.

Comments and string literals are stripped before looking; `include!` and
macros are not expanded (`pb.rs`'s generated code is not seen).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """The code with comments and string/char literals blanked out (line
    breaks kept), so that neither braces nor paths inside them count."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"[A-Za-z0-9_]", text[i - 1 : i] or " "):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append(" " + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(" " + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" ")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree: str) -> list[tuple[list[str], str | None]]:
    """`a::{b, c::{d as e}, f::*}` → [(path, alias or None), ...]."""
    # `x as y` becomes `x@y` before the spaces go.
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", tree))
    results: list[tuple[list[str], str | None]] = []

    def walk(prefix: list[str], part: str) -> None:
        brace = part.find("{")
        if brace >= 0 and part.endswith("}"):
            head = [s for s in part[:brace].split("::") if s]
            inner = part[brace + 1 : -1]
            depth, start = 0, 0
            for k, ch in enumerate(inner + ","):
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                elif ch == "," and depth == 0:
                    if inner[start:k]:
                        walk(prefix + head, inner[start:k])
                    start = k + 1
            return
        alias = None
        if "@" in part:
            part, alias = part.split("@", 1)
        segments = [s for s in part.split("::") if s]
        if segments == ["self"]:
            results.append((prefix, alias))
        else:
            results.append((prefix + segments, alias))

    walk([], tree)
    return results


class Crate:
    """The module tree of one `src/` directory and the parsed `use`s of
    every file in it."""

    def __init__(self, src: Path):
        self.src = src
        # module path (tuple of names) -> file
        self.modules: dict[tuple[str, ...], Path] = {}
        for path in sorted(src.rglob("*.rs")):
            rel = path.relative_to(src)
            if rel.parts[0] == "bin":
                continue
            parts = list(rel.with_suffix("").parts)
            if parts in (["lib"], ["main"]):
                key: tuple[str, ...] = ()
            elif parts[-1] == "mod":
                key = tuple(parts[:-1])
            else:
                key = tuple(parts)
            self.modules.setdefault(key, path)
        self.module_of = {file: key for key, file in self.modules.items()}
        self.code = {f: strip_comments_and_strings(f.read_text()) for f in self.modules.values()}
        # file -> [(inline module path, path segments, alias, is pub)]
        self.uses: dict[Path, list[tuple[tuple[str, ...], list[str], str | None, bool]]] = {}
        self.paths: dict[Path, list[tuple[tuple[str, ...], list[str]]]] = {}
        for file, code in self.code.items():
            self.scan(file, code)

    def scan(self, file: Path, code: str) -> None:
        """Finds the `use` declarations and `crate::`/`super::`/`self::`
        paths of `file`, each with the (inline) module it sits in."""
        base = self.module_of[file]
        uses, paths = [], []
        # Inline modules: a stack of (name, brace depth at which it opened).
        stack: list[tuple[str, int]] = []
        depth = 0
        token = re.compile(
            rf"(?P<mod>\bmod\s+(?P<name>{IDENT})\s*\{{)"
            rf"|(?P<use>\b(?P<pub>pub(\([^)]*\))?\s+)?use\s+(?P<tree>[^;]+);)"
            rf"|(?P<path>(?<![A-Za-z0-9_:])(?:crate|super|self)(?:::{IDENT})+)"
            r"|(?P<open>\{)|(?P<close>\})"
        )
        for m in token.finditer(code):
            here = base + tuple(name for name, _ in stack)
            if m.group("mod"):
                depth += 1
                stack.append((m.group("name"), depth))
            elif m.group("open"):
                depth += 1
            elif m.group("close"):
                if stack and stack[-1][1] == depth:
                    stack.pop()
                depth -= 1
            elif m.group("use"):
                for segments, alias in expand_use_tree(m.group("tree")):
                    uses.append((here, segments, alias, bool(m.group("pub"))))
            elif m.group("path"):
                paths.append((here, m.group("path").split("::")))
        self.uses[file] = uses
        self.paths[file] = paths

    def resolve(self, here: tuple[str, ...], segments: list[str], seen: int = 0) -> Path | None:
        """The file that defines what `segments`, written in module `here`,
        names; `None` for paths outside the crate."""
        if not segments or seen > 8:
            return None
        first, rest = segments[0], segments[1:]
        if first == "crate":
            module: tuple[str, ...] = ()
        elif first in ("super", "self"):
            module = here
            while segments and segments[0] in ("super", "self"):
                if segments[0] == "super":
                    module = module[:-1]
                segments = segments[1:]
            rest = segments
        else:
            return None
        # Inline modules have no file: climb to the one that does.
        while rest and module + (rest[0],) in self.modules:
            module = module + (rest[0],)
            rest = rest[1:]
        while module not in self.modules:
            module = module[:-1]
        file = self.modules[module]
        if rest and rest[0] != "*":
            # An item only re-exported here is followed to its definition.
            for at, target, alias, public in self.uses[file]:
                name = alias or (target[-1] if target else None)
                if public and name == rest[0] and target and target[0] != "*":
                    absolute = target if target[0] in ("crate", "super", "self") else ["self"] + target
                    found = self.resolve(at, absolute + rest[1:], seen + 1)
                    if found is not None:
                        return found
        return file

    def edges(self) -> dict[Path, set[Path]]:
        graph: dict[Path, set[Path]] = {f: set() for f in self.modules.values()}
        for file in self.modules.values():
            own = self.module_of[file]
            refs = [(here, segs) for here, segs, _, _ in self.uses[file]]
            refs += self.paths[file]
            for here, segments in refs:
                target = self.resolve(here, segments)
                if target is None or target == file:
                    continue
                # A parent using its own descendants is not an edge.
                if self.module_of[target][: len(own)] == own:
                    continue
                graph[file].add(target)
        return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Every elementary cycle: the strongly connected components of more
    than one file (Tarjan's algorithm), then each way round inside them."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    components: list[list[Path]] = []
    counter = 0

    def connect(v: Path) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)

    # Every elementary cycle of each component, each once: from its
    # smallest file, through larger ones only (the components are small;
    # the cap keeps a pathological tree from running for ever).
    found: list[list[Path]] = []
    for component in sorted(components):
        order = {f: i for i, f in enumerate(component)}
        for start in component:
            path = [start]

            def extend(v: Path) -> None:
                for w in sorted(graph[v]):
                    if len(found) >= 1000 or w not in order or order[w] < order[start]:
                        continue
                    if w == start:
                        found.append(path + [start])
                    elif w not in path:
                        path.append(w)
                        extend(w)
                        path.pop()

            extend(start)
    return found


def report(src: Path) -> int:
    crate = Crate(src)
    found = cycles(crate.edges())
    for cycle in found:
        print(" -> ".join(str(f.relative_to(src)) for f in cycle))
    return 1 if found else 0


def self_test() -> int:
    """A tiny synthetic crate with one cycle hidden behind a re-export, one
    parent/child pair that is not a cycle, and an inline test module."""
    files = {
        "lib.rs": "pub mod a;\npub mod b;\npub mod tree;\npub use a::Thing;\n",
        # a.rs -> b.rs
        "a.rs": "use crate::b::helper;\npub struct Thing;\n",
        # b.rs -> a.rs, through lib.rs's re-export: a cycle.
        "b.rs": "pub fn helper() -> crate::Thing { crate::Thing }\n",
        # tree/mod.rs uses its child and the child uses its parent: no cycle.
        "tree/mod.rs": "mod leaf;\npub use leaf::Leaf;\npub struct Config;\n"
        "fn f() { leaf::go() }\n",
        "tree/leaf.rs": "use super::Config;\npub struct Leaf;\npub fn go() {}\n"
        "// use crate::a::Thing; (a comment, not an import)\n"
        '#[cfg(test)]\nmod tests {\n    use super::*;\n    const S: &str = "crate::b::helper";\n}\n',
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        for name, text in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        crate = Crate(src)
        graph = {
            str(k.relative_to(src)): sorted(str(v.relative_to(src)) for v in vs)
            for k, vs in crate.edges().items()
        }
        want = {
            "lib.rs": [],
            "a.rs": ["b.rs"],
            "b.rs": ["a.rs"],
            "tree/mod.rs": [],
            "tree/leaf.rs": ["tree/mod.rs"],
        }
        assert graph == want, f"edges: {graph}"
        found = [[str(f.relative_to(src)) for f in c] for c in cycles(crate.edges())]
        assert found == [["a.rs", "b.rs", "a.rs"]], f"cycles: {found}"
        assert expand_use_tree("x::{y, z::{w as v}, self, *}") == [
            (["x", "y"], None),
            (["x", "z", "w"], "v"),
            (["x"], None),
            (["x", "*"], None),
        ], expand_use_tree("x::{y, z::{w as v}, self, *}")
    print("self-test passed: the cycle a.rs -> b.rs -> a.rs was found, and nothing else")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent.parent / "src"
    return report(src)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
