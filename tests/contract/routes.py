"""The routes the server serves, read from the router's Rust source.

Reads every `.route("path", <method router>)` (and `.route_service`) call in
`homeserver/src/api/*.rs`, outside `#[cfg(test)]` code. Routes defined in
`client_routes()` are expanded under each prefix that `router()` nests them
at (`.nest("/_matrix/client/v3", client...)`); those of another router
function nested by a call (`.nest("/_matrix/client/v1", v1_routes())`) under
its prefix; every other route is absolute. A function whose router is merged into another
(`.merge(e2ee_routes())`, `.merge(media::routes(..))`) serves its routes
where that one does: under the prefixes if merged into `client_routes()`.
`.merge(variable)` is followed to the variable's `let`; a router function of
a sub-folder (`federation::routes()`, from `api/federation/`) is that
folder's to list (`served_routes(API_DIR / "federation")`). Methods come
from the `get(..)`, `.post(..)`, ... calls in the method router. Anything the
parser does not understand (`.nest` of another router, a `.merge` of an
inline router or of a function it cannot find, `on(..)`, `any(..)`, a path
that is not a string literal) is an error, so a change to the router's
shape fails loudly instead of silently dropping routes.
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


# Calls in a merged expression that are not router functions.
_NOT_ROUTERS = {"Some", "None", "Ok", "Err", "Router::new"}


def _let_expression(body: str, name: str, where: str) -> str:
    """The expression a function body binds to `name` with `let`."""
    m = re.search(r"\blet\s+(?:mut\s+)?" + re.escape(name) + r"\b\s*(?::[^=;]+)?=", body)
    if not m:
        raise RouterParseError(f"{where}: .merge({name}) of a variable bound by no `let`")
    depth, in_str, i = 0, False, m.end()
    while i < len(body):
        c = body[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            in_str = c != '"'
        elif c == '"':
            in_str = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth == 0:
            return body[m.end():i]
        i += 1
    raise RouterParseError(f"{where}: unterminated `let {name}`")


def _merged_functions(arg: str, body: str, where: str) -> list[str]:
    """The router functions (`name` or `module::name`) a `.merge(arg)` merges.

    `arg` is a call (`e2ee_routes()`, `media::routes(flag)`) or a variable
    bound by `let` to an expression made of such calls (and `Router::new()`,
    the empty router, in a `match` or `if`)."""
    arg = arg.strip()
    if re.fullmatch(r"[a-z_][a-z0-9_]*", arg):
        expr = _let_expression(body, arg, where)
    elif re.fullmatch(r"[A-Za-z_][\w:]*\s*\(.*\)", arg, re.DOTALL):
        if arg.startswith("Router"):
            raise RouterParseError(f"{where}: nest_service/merge of an inline router is not understood: {arg!r}")
        callee = re.match(r"[A-Za-z_][\w:]*", arg).group(0)
        inner = arg[arg.index("(") + 1:-1]
        if "(" in inner:
            raise RouterParseError(f"{where}: .merge({arg!r}): arguments with calls are not understood")
        return [callee]
    else:
        raise RouterParseError(f"{where}: .merge({arg!r}) is not understood")
    if re.search(r"\.(route|route_service|nest|nest_service|merge)\s*\(", expr):
        raise RouterParseError(f"{where}: a router built inline in `let {arg}` is not understood")
    calls = [c for c in re.findall(r"(?<![.\w:])([A-Za-z_][\w]*(?:::[A-Za-z_]\w*)*)\s*\(", expr) if c not in _NOT_ROUTERS]
    if not calls and "Router::new" not in expr:
        raise RouterParseError(f"{where}: .merge({arg}): `let {arg}` names no router")
    return calls


def served_routes(api_dir: Path = API_DIR, min_routes: int = 10) -> set[tuple[str, str]]:
    """Every (METHOD, path) the router serves, with `{param}` placeholders.

    `api_dir` is one folder of route files (`api/federation` for the
    Server-Server API); finding fewer than `min_routes` means the parser broke."""
    prefixes: list[str] = []
    files = sorted(p for p in api_dir.glob("*.rs") if not p.stem.endswith("tests") and p.stem != "tests")
    if not files:
        raise RouterParseError(f"no Rust files in {api_dir}")
    # Per function, keyed by (file stem, name): its routes, and the
    # functions whose routers it merges (resolved below).
    own: dict[tuple[str, str], set[tuple[str, str]]] = {}
    merges: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    # Router functions nested by a call, with their prefixes.
    nests: list[tuple[str, str, str, str]] = []
    for path in files:
        text = _strip_comments_and_tests(path.read_text())
        for name, body in _functions(text):
            key = (path.stem, name)
            where = f"{path.name}:{name}"
            found = own.setdefault(key, set())
            for kind in ("route", "route_service"):
                for args in _calls(body, kind):
                    parts = _split_args(args)
                    if len(parts) != 2:
                        raise RouterParseError(f"{where}: .{kind}() with {len(parts)} arguments: {args!r}")
                    route = _literal(parts[0], where)
                    methods = {"GET"} if kind == "route_service" and not re.search(r"\w\s*\(", parts[1]) else _methods(parts[1], where)
                    found.update((m, route) for m in methods)
            for args in _calls(body, "nest"):
                parts = _split_args(args)
                prefix = _literal(parts[0], where)
                if re.search(r"\bclient\b|\b" + NESTED_FN + r"\s*\(", parts[1]):
                    prefixes.append(prefix)
                    continue
                callee = re.fullmatch(r"([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)?)\s*\(\s*\)", parts[1].strip())
                if not callee:
                    raise RouterParseError(f"{where}: .nest({prefix!r}, {parts[1]!r}) nests a router this parser does not know")
                nests.append((prefix, path.stem, callee.group(1), where))
            if re.search(r"\.nest_service\s*\(", body):
                raise RouterParseError(f"{where}: nest_service/merge of an inline router is not understood")
            for args in _calls(body, "merge"):
                for callee in _merged_functions(args, body, where):
                    merges.setdefault(key, []).append((path.stem, callee, where))

    # Resolve each merged function to a function of these files; one of a
    # sub-folder's module is that folder's (listed by its own call).
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for parent, callees in merges.items():
        for stem, callee, where in callees:
            *module, name = callee.split("::")
            if len(module) > 1:
                raise RouterParseError(f"{where}: .merge of {callee}: only `name` or `module::name` is understood")
            target = (module[0] if module else stem, name)
            if target in own:
                children.setdefault(parent, []).append(target)
            elif module and (api_dir / module[0]).is_dir() and (api_dir / module[0] / "mod.rs").is_file():
                continue  # e.g. federation::routes(): api/federation/ lists its own
            else:
                raise RouterParseError(f"{where}: .merge of {callee}, a function not found in {api_dir}")

    # Router functions nested by a call are served under their prefix.
    nested_by_call: dict[tuple[str, str], set[str]] = {}
    for prefix, stem, callee, where in nests:
        *module, name = callee.split("::")
        target = (module[0] if module else stem, name)
        if target not in own:
            raise RouterParseError(f"{where}: .nest of {callee}, a function not found in {api_dir}")
        nested_by_call.setdefault(target, set()).add(prefix)

    # Where each function's routes are served: under the prefixes it is
    # nested at (client_routes() and what it merges, or a function nested by
    # a call and what that merges), or absolute ("", everything else).
    merged = {c for cs in children.values() for c in cs}
    bases: dict[tuple[str, str], set[str]] = {}
    stack = []
    for key in own:
        if key in merged:
            continue
        if key[1] == NESTED_FN:
            if own[key] and not prefixes:
                raise RouterParseError(f"{NESTED_FN}() has routes but is nested nowhere")
            stack.append((key, frozenset(prefixes)))
        else:
            stack.append((key, frozenset(nested_by_call.get(key, {""}))))
    seen: set[tuple[tuple[str, str], frozenset]] = set()
    while stack:
        key, under = stack.pop()
        if (key, under) in seen:
            continue
        seen.add((key, under))
        bases.setdefault(key, set()).update(under)
        stack.extend((child, under) for child in children.get(key, []))
    unreached = merged - set(bases)
    if unreached:
        raise RouterParseError(f"router functions merged only in a cycle: {sorted(unreached)}")
    if any(key in merged for key in nested_by_call):
        raise RouterParseError(f"a router function both nested and merged is not understood: {sorted(k for k in nested_by_call if k in merged)}")

    routes = {(m, prefix + p) for key, under in bases.items() for prefix in under for m, p in own[key]}
    if len(routes) < min_routes:
        raise RouterParseError(f"found only {len(routes)} routes in {api_dir}: the parser is broken")
    return routes


def normalise(path: str) -> str:
    """A path template with its parameter names erased: `/a/{}/b`."""
    return re.sub(r"\{[^}/]*\}", "{}", path)
