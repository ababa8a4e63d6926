"""The API description served by the server: `/_tern/openapi.yaml`, the
Redoc page at `/_tern/docs` and its script, all from this server."""

from __future__ import annotations

import hashlib
import re

from spec import REPO, SPEC_PATH

API_SPEC = REPO / "api-spec"
DOCS_HTML = API_SPEC / "docs.html"
REDOC = API_SPEC / "vendor" / "redoc.standalone.js"


def test_docs_page_loads_nothing_from_elsewhere():
    html = DOCS_HTML.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I), "docs.html links outside the server"
    assert "fonts.googleapis" not in html and "cdn." not in html
    assert 'src="/_tern/redoc.standalone.js"' in html
    assert 'spec-url="/_tern/openapi.yaml"' in html
    # Redoc's bundle shows a logo from its CDN; the page's policy blocks it.
    assert "img-src 'self' data:" in html


def test_vendored_redoc_is_the_recorded_release():
    readme = (API_SPEC / "vendor" / "README.md").read_text()
    digest = hashlib.sha256(REDOC.read_bytes()).hexdigest()
    assert digest in readme, f"vendor/README.md does not record sha256 {digest}"
    assert (API_SPEC / "vendor" / "redoc.LICENSE").read_text().startswith("The MIT License")


def test_the_server_serves_this_spec(contract):
    served = contract.call("GET", "/_tern/openapi.yaml")
    assert served.headers["content-type"].startswith("application/yaml")
    assert served.content == SPEC_PATH.read_bytes(), "the binary embeds an older api-spec/openapi.yaml: rebuild it"
    etag = served.headers["etag"]
    again = contract.call("GET", "/_tern/openapi.yaml", headers={"If-None-Match": etag}, expect=304)
    assert again.content == b""


def test_the_server_serves_the_docs_page_and_redoc(contract):
    page = contract.call("GET", "/_tern/docs")
    assert page.headers["content-type"].startswith("text/html")
    assert page.content == DOCS_HTML.read_bytes()
    script = contract.call("GET", "/_tern/redoc.standalone.js")
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert hashlib.sha256(script.content).hexdigest() == hashlib.sha256(REDOC.read_bytes()).hexdigest()
    contract.call("GET", "/_tern/redoc.standalone.js", headers={"If-None-Match": script.headers["etag"]}, expect=304)


def test_the_web_client_page(contract):
    """`/` is the web client when the binary has one, else 404 M_NOT_FOUND."""
    page = contract.call("GET", "/", expect=(200, 404))
    if page.status_code == 200:
        assert page.headers["content-type"].startswith("text/html")
    else:
        assert page.json()["errcode"] == "M_NOT_FOUND"
