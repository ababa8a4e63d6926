"""The routes the server serves, read from the router's Rust source.

Reads every `.route("path", <method router>)` (and `.route_service`) call in
`homeserver/src/api/*.rs`, outside `#[cfg(test)]` code. Routes defined in
`client_routes()` are expanded under each prefix that `router()` nests them
at (`.nest("/_matrix/client/v3", client...)`); every other route is
absolute. Methods come from the `get(..)`, `.post(..)`, ... calls in the
method router. Anything the parser does not understand (`.nest` of another
router, `on(..)`, `any(..)`, a path that is not a string literal) is an
error, so a change to the router's shape fails loudly instead of silently
dropping routes.
"""

from __future__ import annotations

import re
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[2] / "homeserver" / "src" / "api"
METHOD_FUNCS = ("get", "post", "put", "delete", "patch", "head", "options")
NESTED_FN = "client_routes"


class RouterParseError(Exception):
    pass


def _blank_comments_and_chars(src: str) -> str:
    """Removes comments and character literals, keeping string literals.

    Character literals such as `'"'` or `'{'` would otherwise confuse the
    bracket matching; lifetimes (`'a`) are left alone.
    """
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j == -1 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j == -1 else j + 2
        elif c == "r" and re.match(r'r#*"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", src[i:]).group(1)
            j = src.find('"' + hashes, i + len(hashes) + 2)
            j = n if j == -1 else j + 1 + len(hashes)
            body = src[i + len(hashes) + 2 : j - 1 - len(hashes)]
            out.append('"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"')
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        elif c == "'":
            if i + 1 < n and src[i + 1] == "\\":
                j = src.find("'", i + 3)
                out.append("' '")
                i = j + 1
            elif i + 2 < n and src[i + 2] == "'":
                out.append("' '")
                i += 3
            else:
                out.append(c)  # a lifetime
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _strip_comments_and_tests(src: str) -> str:
    """Drops comments and `#[cfg(test)]` items (a `mod x;` or a block)."""
    text = _blank_comments_and_chars(src)
    while True:
        m = re.search(r"#\[cfg\(test\)\]", text)
        if not m:
            return text
        rest = text[m.end():]
        semi = rest.find(";")
        brace = rest.find("{")
        if brace == -1 or (semi != -1 and semi < brace):
            end = m.end() + semi + 1  # `#[cfg(test)] mod tests;`
        else:
            end = m.end() + _matching(rest, brace, "{", "}") + 1
        text = text[: m.start()] + text[end:]


def _matching(text: str, open_at: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at `open_at` (skips string literals)."""
    depth = 0
    in_str = False
    i = open_at
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise RouterParseError(f"unbalanced {open_ch}{close_ch}")


def _split_args(args: str) -> list[str]:
    """Splits a call's argument text at top-level commas."""
    parts, depth, start, in_str = [], 0, 0, False
    for i, c in enumerate(args):
        if in_str:
            if c == '"' and args[i - 1] != "\\":
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    tail = args[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _functions(text: str) -> list[tuple[str, str]]:
    """(name, body) of every `fn` in the text."""
    found = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)\b[^{;]*\{", text):
        open_at = m.end() - 1
        found.append((m.group(1), text[open_at:_matching(text, open_at, "{", "}") + 1]))
    return found


def _calls(body: str, method: str):
    """(argument text) of every `.method(` call in a function body."""
    for m in re.finditer(r"\." + method + r"\s*\(", body):
        open_at = m.end() - 1
        yield body[open_at + 1:_matching(body, open_at, "(", ")")]


def _methods(router_expr: str, where: str) -> set[str]:
    if re.search(r"\b(on|any|on_service|any_service)\s*\(", router_expr):
        raise RouterParseError(f"{where}: `on`/`any` method routers are not understood: {router_expr!r}")
    found = set(re.findall(r"\b(" + "|".join(METHOD_FUNCS) + r")(?:_service)?\s*\(", router_expr))
    if not found:
        raise RouterParseError(f"{where}: no method found in {router_expr!r}")
    return {m.upper() for m in found}


def _literal(arg: str, where: str) -> str:
    m = re.fullmatch(r'"([^"\\]*)"', arg.strip())
    if not m:
        raise RouterParseError(f"{where}: route path is not a string literal: {arg!r}")
    return m.group(1)


def served_routes(api_dir: Path = API_DIR, min_routes: int = 10) -> set[tuple[str, str]]:
    """Every (METHOD, path) the router serves, with `{param}` placeholders.

    `api_dir` is one folder of route files (`api/federation` for the
    Server-Server API); finding fewer than `min_routes` means the parser broke."""
    nested: set[tuple[str, str]] = set()
    absolute: set[tuple[str, str]] = set()
    prefixes: list[str] = []
    files = sorted(p for p in api_dir.glob("*.rs") if not p.stem.endswith("tests") and p.stem != "tests")
    if not files:
        raise RouterParseError(f"no Rust files in {api_dir}")
    for path in files:
        text = _strip_comments_and_tests(path.read_text())
        for name, body in _functions(text):
            for kind in ("route", "route_service"):
                for args in _calls(body, kind):
                    parts = _split_args(args)
                    where = f"{path.name}:{name}"
                    if len(parts) != 2:
                        raise RouterParseError(f"{where}: .{kind}() with {len(parts)} arguments: {args!r}")
                    route = _literal(parts[0], where)
                    methods = {"GET"} if kind == "route_service" and not re.search(r"\w\s*\(", parts[1]) else _methods(parts[1], where)
                    target = nested if name == NESTED_FN else absolute
                    target.update((m, route) for m in methods)
            for args in _calls(body, "nest"):
                parts = _split_args(args)
                where = f"{path.name}:{name}"
                prefix = _literal(parts[0], where)
                if not re.search(r"\bclient\b|\b" + NESTED_FN + r"\s*\(", parts[1]):
                    raise RouterParseError(f"{where}: .nest({prefix!r}, {parts[1]!r}) nests a router this parser does not know")
                prefixes.append(prefix)
            if re.search(r"\.nest_service\s*\(|\.merge\s*\(\s*Router", body):
                raise RouterParseError(f"{path.name}:{name}: nest_service/merge of an inline router is not understood")
    if nested and not prefixes:
        raise RouterParseError(f"{NESTED_FN}() has routes but is nested nowhere")
    routes = set(absolute)
    for prefix in prefixes:
        routes.update((m, prefix + p) for m, p in nested)
    if len(routes) < min_routes:
        raise RouterParseError(f"found only {len(routes)} routes in {api_dir}: the parser is broken")
    return routes


def normalise(path: str) -> str:
    """A path template with its parameter names erased: `/a/{}/b`."""
    return re.sub(r"\{[^}/]*\}", "{}", path)
