"""The spec lists exactly the routes the server serves.

Two views of "served": the router's Rust source (`routes.py` parses every
`.route(...)` call) and the running server (every specified operation must
reach a handler, not the router's fallback).
"""

from __future__ import annotations

import re

import pytest
import requests

from routes import RouterParseError, normalise, served_routes
from spec import expanded_spec, operations

# Values for path parameters when probing the live server.
DUMMY = {
    "roomId": "!dummy:localhost",
    "roomIdOrAlias": "!dummy:localhost",
    "roomAlias": "#dummy:localhost",
    "userId": "@dummy:localhost",
    "eventId": "$dummy",
    "serverName": "localhost",
    "mediaId": "dummy",
}
FALLBACK_TEXTS = {"Unrecognized request", "Method not allowed on this endpoint"}


def _regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def _covers(served: tuple[str, str], specified: tuple[str, str]) -> bool:
    """A served route covers a specified operation with the same method and
    the same template, or a route parameter that the spec spells out as
    literal names (`/_tern/{name}` serves `/_tern/docs`)."""
    (sm, sp), (pm, pp) = served, specified
    if sm != pm:
        return False
    if normalise(sp) == normalise(pp):
        return True
    return bool(_regex(sp).fullmatch(pp)) and pp.count("{") < sp.count("{")


@pytest.fixture(scope="module")
def served():
    return served_routes()


@pytest.fixture(scope="module")
def specified():
    return operations(expanded_spec())


def test_the_router_parser_finds_the_routes(served):
    # Fails loudly rather than passing on an empty list.
    assert ("GET", "/_matrix/client/v3/sync") in served
    assert ("GET", "/_matrix/client/r0/sync") in served
    assert ("POST", "/_matrix/media/v3/upload") in served
    assert ("DELETE", "/_matrix/client/v3/pushrules/global/{kind}/{rule_id}") in served
    # Routes of a router merged into client_routes() (`.merge(e2ee_routes())`)
    # are served under its prefixes, not at the root.
    for prefix in ("/_matrix/client/v3", "/_matrix/client/r0"):
        assert ("POST", prefix + "/keys/upload") in served
        assert ("DELETE", prefix + "/devices/{device_id}") in served
    assert not [r for r in served if not r[1].startswith(("/_matrix/", "/_tern/", "/.well-known/")) and r[1] != "/"]
    assert len(served) > 100


def _router_dir(tmp_path, source: str, **modules: str):
    (tmp_path / "mod.rs").write_text(source)
    for name, text in modules.items():
        (tmp_path / f"{name}.rs").write_text(text)
    return tmp_path


ROUTES = "".join(f'.route("/r{i}", get(h))' for i in range(3))


def test_the_router_parser_follows_merges(tmp_path):
    source = (
        "fn client_routes() -> Router { Router::new().route(\"/a\", get(h)).merge(more()) }\n"
        "fn more() -> Router { Router::new().route(\"/b\", post(h).put(h)) }\n"
        "fn v1_routes() -> Router { Router::new().route(\"/c\", get(h)).merge(v1_more()) }\n"
        "fn v1_more() -> Router { Router::new().route(\"/d\", delete(h)) }\n"
        "fn router() -> Router { let client = client_routes();\n"
        "  let fed = match x { Some(_) => sub::routes(), None => Router::new() };\n"
        "  Router::new()" + ROUTES + ".nest(\"/v3\", client).nest(\"/v1\", v1_routes())"
        ".merge(extra::routes(true)).merge(fed) }\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mod.rs").write_text("")
    api = _router_dir(tmp_path, source, extra='fn routes(f: bool) -> Router { Router::new().route("/x", get(h)) }')
    assert served_routes(api, min_routes=1) == {
        ("GET", "/v3/a"), ("POST", "/v3/b"), ("PUT", "/v3/b"), ("GET", "/x"),
        ("GET", "/r0"), ("GET", "/r1"), ("GET", "/r2"), ("GET", "/v1/c"), ("DELETE", "/v1/d"),
    }


@pytest.mark.parametrize("nested", [
    "Router::new().route(\"/y\", get(h))",  # an inline router
    "missing()",                              # a function not in the folder
    "routes",                                 # a variable
])
def test_the_router_parser_refuses_nests_it_does_not_understand(tmp_path, nested):
    source = (
        "fn client_routes() -> Router { Router::new().route(\"/a\", get(h)) }\n"
        "fn router() -> Router { Router::new()" + ROUTES + ".nest(\"/v3\", client_routes()).nest(\"/v1\", " + nested + ") }\n"
    )
    with pytest.raises(RouterParseError):
        served_routes(_router_dir(tmp_path, source), min_routes=1)


@pytest.mark.parametrize("merge", [
    "Router::new().route(\"/y\", get(h))",  # an inline router
    "missing()",                              # a function not in the folder
    "nowhere::routes()",                      # a module that is not there
    "unbound",                                # a variable without `let`
    "a::b::routes()",                         # a longer path
])
def test_the_router_parser_refuses_merges_it_does_not_understand(tmp_path, merge):
    source = (
        "fn client_routes() -> Router { Router::new().route(\"/a\", get(h)) }\n"
        "fn router() -> Router { Router::new()" + ROUTES + ".nest(\"/v3\", client_routes()).merge(" + merge + ") }\n"
    )
    with pytest.raises(RouterParseError):
        served_routes(_router_dir(tmp_path, source), min_routes=1)


def test_every_served_route_is_in_the_spec(served, specified):
    missing = sorted(r for r in served if not any(_covers(r, s) for s in specified))
    assert not missing, "served but not in api-spec/openapi.yaml:\n" + "\n".join(f"  {m} {p}" for m, p in missing)


def test_every_specified_operation_is_served(served, specified):
    extra = sorted(s for s in specified if not any(_covers(r, s) for r in served))
    assert not extra, "in api-spec/openapi.yaml but not served:\n" + "\n".join(f"  {m} {p}" for m, p in extra)


def _fill(template: str) -> str:
    def value(m: re.Match) -> str:
        return requests.utils.quote(DUMMY.get(m.group(1), "x"), safe="")
    return re.sub(r"\{([^}/]+)\}", value, template)


def test_every_specified_operation_reaches_a_handler(tern, specified):
    """No specified (method, path) gets the router's fallback answer."""
    fallen = []
    for method, template in sorted(specified):
        url = tern.base_url + _fill(template)
        kwargs = {"timeout": 30}
        if method in ("POST", "PUT"):
            kwargs["data"] = "{}"
        # Without a token, the SSE endpoints answer 401 at once.
        resp = requests.request(method, url, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if (
            resp.status_code in (404, 405)
            and isinstance(body, dict)
            and body.get("errcode") == "M_UNRECOGNIZED"
            and body.get("error") in FALLBACK_TEXTS
        ):
            fallen.append(f"  {method} {template} -> {resp.status_code} {body.get('error')}")
    assert not fallen, "specified but answered by the router's fallback:\n" + "\n".join(fallen)


def test_an_unspecified_route_gets_the_fallback(tern):
    """The check above would be vacuous if the fallback looked different."""
    resp = requests.get(tern.base_url + "/_matrix/client/v3/no_such_endpoint", timeout=10)
    assert resp.status_code == 404
    assert resp.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
    resp = requests.delete(tern.base_url + "/_matrix/client/v3/sync", timeout=10)
    assert resp.status_code == 405
    assert resp.json() == {"errcode": "M_UNRECOGNIZED", "error": "Method not allowed on this endpoint"}
