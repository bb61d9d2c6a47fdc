#!/usr/bin/env python3
"""Reads every `crate::` path in src/ and fails on an import cycle between modules, or on an
import that breaks the layer rule of docs/architecture.md (nothing points up, and no route file
or consumer uses another). Run by `make unit`."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

def modules():
    mods = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), SRC)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel == ["lib"]:
                rel = []
            mods["::".join(rel)] = os.path.join(root, f)
    return mods

PATH = re.compile(r"\bcrate((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*)\{([^;]*?)\}", re.S)

def strip_tests(text):
    # Test modules may reach anywhere, and comments name modules without using them: neither
    # is part of the dependency graph.
    i = text.find("#[cfg(test)]\nmod tests")
    text = text if i < 0 else text[:i]
    return re.sub(r"//[^\n]*", "", text)

def targets(text, mods, name):
    # `super::x` is `crate::<parent>::x`: read it as such.
    parent = name.split("::")[:-1]
    sup = "crate" + "".join("::" + p for p in parent)
    text = re.sub(r"\bsuper::", sup + "::", text)
    found = set()
    def resolve(parts):
        for n in range(len(parts), 0, -1):
            name = "::".join(parts[:n])
            if name in mods:
                return name
        return None
    for m in PATH.finditer(text):
        r = resolve(m.group(1).strip(":").split("::"))
        if r is not None:
            found.add(r)
    for m in GROUP.finditer(text):
        prefix = [p for p in m.group(1).split("::") if p]
        for item in re.split(r"[,\s]+", m.group(2)):
            item = item.strip().split(" as ")[0]
            if not item or not re.match(r"^[a-z_]", item):
                continue
            r = resolve(prefix + [p for p in item.split("::") if p and p != "self"])
            if r is not None:
                found.add(r)
    return found

def layer(mod):
    top = mod.split("::")[0]
    return top

# Which top-level folders a folder may use. Anything not listed may not be used.
ALLOWED = {
    "domain": {"domain"},
    "platform": {"platform", "domain"},
    "store": {"store", "domain", "platform"},
    "http": {"http", "domain", "platform", "store"},
    "app": {"app", "domain", "platform", "store", "http"},
    "routes": {"routes", "app", "domain", "platform", "store", "http"},
    "consumers": {"consumers", "app", "domain", "platform", "store", "http"},
    "durable": {"durable", "app", "domain", "platform", "store", "http"},
    "cron": {"cron", "app", "consumers", "domain", "platform", "store"},
    "entry": {"routes", "consumers", "cron", "app", "domain", "platform", "store", "http"},
    "": None,
}

def main():
    mods = modules()
    graph = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            text = strip_tests(fh.read())
        graph[name] = {t for t in targets(text, mods, name) if t != name and not name.startswith(t + "::") and t != ""}
    problems = check(graph)
    if "--graph" in sys.argv:
        for a, deps in sorted(graph.items()):
            print(a or "<lib>", "->", ", ".join(sorted(deps)))
    if problems:
        print("\n".join(problems))
        print(f"check_layers: {len(problems)} problem(s)")
        sys.exit(1)
    print(f"check_layers: {len(graph)} modules, no cycle, layer rule kept")


def check(graph):
    """The problems of a module graph {module: {modules it uses}}."""
    problems = []
    # The layer rule.
    for a, deps in sorted(graph.items()):
        la = layer(a)
        allowed = ALLOWED.get(la, "missing")
        if allowed == "missing":
            problems.append(f"{a}: top-level module `{la}` has no place in the layer rule (scripts/check_layers.py)")
            continue
        if allowed is None:
            continue
        for b in sorted(deps):
            lb = layer(b)
            if lb not in allowed:
                problems.append(f"{a} uses {b}: `{la}` may not use `{lb}`")
            elif la in ("routes", "consumers", "durable") and lb == la and a != la and b != la:
                problems.append(f"{a} uses {b}: one {la} file may not use another (move what they share to app/)")
    # Cycles, by depth-first search.
    state, stack = {}, []
    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                problems.append("cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            visit(n)
    return problems


def self_test():
    """The check must be able to fail: a cycle, an upward use and a sideways route use."""
    assert any(p.startswith("cycle: app::a -> app::b -> app::a") for p in check({"app::a": {"app::b"}, "app::b": {"app::a"}}))
    assert any("`store` may not use `app`" in p for p in check({"store::x": {"app::y"}, "app::y": set()}))
    assert any("one routes file may not use another" in p for p in check({"routes::a": {"routes::b"}, "routes::b": set()}))
    assert check({"routes::a": {"routes", "app::x"}, "routes": set(), "app::x": {"store::y"}, "store::y": set()}) == []
    mods = {"app": "", "app::outbound": "", "domain::oversight": ""}
    assert targets("use crate::{app::outbound, domain::oversight::{self, X}};", mods, "routes::send") == {"app::outbound", "domain::oversight"}
    assert targets("use super::outbound;", mods, "app::x") == {"app::outbound"}

if __name__ == "__main__":
    self_test()
    main()
