"""A client that checks every exchange against `api-spec/openapi.yaml`.

Each request goes to the real server; its response (status, headers, body)
is validated with openapi-core against the spec, with the `r0` copies
expanded. A status the spec does not list for the operation, a body that
does not match its schema or a path the spec does not have fails the test.
Well-formed requests are validated too, so the spec's request schemas are
known to accept what real clients send; deliberately bad requests are
not.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass

import jsonschema
import referencing
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from urllib.parse import unquote

from spec import METHODS, expanded_spec

_UNSET = object()
SPEC_URI = "urn:tern:openapi"


@dataclass
class Operation:
    method: str
    template: str
    operation_id: str
    regex: re.Pattern


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


class ContractError(AssertionError):
    pass


class _DecodedRequest(RequestsOpenAPIRequest):
    """openapi-core 0.23 checks path parameters still percent-encoded
    (`%21room%3Aserver`); decode them, except `%2F`, which would split a
    segment."""

    @property
    def path(self) -> str:
        raw = super().path
        return unquote(re.sub(r"%2[fF]", "%252F", raw))


class _TextResponse(RequestsOpenAPIResponse):
    """A non-JSON answer (media, HTML, YAML) with its bytes as text.

    openapi-core checks `type: string` bodies against `str`; media bytes are
    given as Latin-1 text, which maps every byte to one character.
    """

    @property
    def data(self):
        return self.response.content.decode("latin-1")


class Contract:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.spec = expanded_spec()
        self.spec["servers"] = [{"url": base_url}]
        self.openapi = OpenAPI.from_dict(self.spec)
        self.http = requests.Session()
        self.operations = [
            Operation(m.upper(), path, item[m]["operationId"], _template_regex(path))
            for path, item in self.spec["paths"].items()
            for m in METHODS
            if m in item
        ]
        # (operationId, status) -> count, for the coverage check.
        self.seen: collections.Counter = collections.Counter()
        resource = referencing.Resource.from_contents(self.spec, default_specification=referencing.jsonschema.DRAFT202012)
        self._registry = referencing.Registry().with_resource(SPEC_URI, resource)

    # --- lookups -------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        """The spec operation a concrete path is served by (literal segments win)."""
        raw = path.split("?", 1)[0]
        found = [op for op in self.operations if op.method == method and op.regex.fullmatch(raw)]
        if not found:
            raise ContractError(f"{method} {raw}: no such operation in the spec")
        return max(found, key=lambda op: len(re.sub(r"\{[^}]*\}", "", op.template)))

    def _needs_token(self, op: Operation) -> bool:
        item = self.spec["paths"][op.template][op.method.lower()]
        return item.get("security", self.spec.get("security")) != []

    def validate_schema(self, component: str, instance) -> None:
        """Validates a value against `#/components/schemas/<component>`."""
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{SPEC_URI}#/components/schemas/{component}"}, registry=self._registry
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            lines = [f"- at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10]]
            raise ContractError(f"value does not match {component}:\n" + "\n".join(lines))

    # --- requests ------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        token_in_query: bool = False,
        json_body=_UNSET,
        data: bytes | str | None = None,
        headers: dict | None = None,
        params: dict | None = None,
        expect: int | tuple = 200,
        errcode: str | None = None,
        check_request: bool = True,
        timeout: float = 60,
    ) -> requests.Response:
        """Sends one request and checks the answer against the spec and `expect`."""
        method = method.upper()
        op = self.operation(method, path)
        headers = dict(headers or {})
        params = dict(params or {})
        if token is not None:
            if token_in_query:
                params["access_token"] = token
            else:
                headers["Authorization"] = f"Bearer {token}"
        kwargs = {"headers": headers, "params": params, "timeout": timeout}
        if json_body is not _UNSET:
            kwargs["data"] = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        elif data is not None:
            kwargs["data"] = data
        try:
            resp = self.http.request(method, self.base_url + path, **kwargs)
        except requests.exceptions.ConnectionError:
            # The server may close a kept-alive connection after answering a
            # request whose body it did not read (a 404 upload, say); like any
            # HTTP client, retry an idempotent request once on a fresh one.
            if method not in ("GET", "HEAD"):
                raise
            resp = self.http.request(method, self.base_url + path, **kwargs)
        where = f"{method} {path} -> {resp.status_code} {resp.text[:500]!r}"
        # A request without a token is checked for its answer only: the
        # spec (rightly) calls it invalid.
        anonymous = token is None and "Authorization" not in headers and self._needs_token(op)
        if check_request and not anonymous and (json_body is not _UNSET or data is None):
            try:
                self.openapi.validate_request(_DecodedRequest(resp.request))
            except Exception as e:  # openapi-core raises many types
                raise ContractError(f"the spec rejects this request: {where}\n{_explain(e)}") from None
        try:
            json_answer = resp.headers.get("content-type", "").startswith("application/json")
            wrapped = RequestsOpenAPIResponse(resp) if json_answer or not resp.content else _TextResponse(resp)
            self.openapi.validate_response(_DecodedRequest(resp.request), wrapped)
        except Exception as e:
            raise ContractError(f"the response does not match the spec: {where}\n{_explain(e)}") from None
        self.seen[(op.operation_id, resp.status_code)] += 1
        expected = expect if isinstance(expect, tuple) else (expect,)
        if resp.status_code not in expected:
            raise ContractError(f"expected {expected}: {where}")
        if errcode is not None and resp.json().get("errcode") != errcode:
            raise ContractError(f"expected {errcode}: {where}")
        return resp

    def record(self, method: str, path: str, status: int) -> None:
        """Counts an exchange validated by other means (SSE streams)."""
        self.seen[(self.operation(method, path).operation_id, status)] += 1


def _explain(error: Exception) -> str:
    parts = [f"{type(error).__name__}: {str(error)[:500]}"]
    cause = error.__cause__ or error.__context__
    depth = 0
    while cause is not None and depth < 4:
        parts.append(f"caused by {type(cause).__name__}: {str(cause)[:800]}")
        for sub in getattr(cause, "schema_errors", []) or []:
            parts.append(f"  - at {list(sub.absolute_path)}: {sub.message[:300]}")
        cause = cause.__cause__ or cause.__context__
        depth += 1
    return "\n".join(parts)
