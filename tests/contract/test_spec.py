"""The spec itself: valid OpenAPI 3.1, and following the house rules."""

from __future__ import annotations

import re

from openapi_spec_validator import OpenAPIV31SpecValidator

from spec import ALSO_SERVED, METHODS, V3_PREFIX, expanded_spec, raw_spec

ERROR_REF = "#/components/schemas/Error"


def _refs(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _target(ref: str) -> list[str]:
    assert ref.startswith("#/"), ref
    return [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]


def _deref(spec: dict, node: dict) -> dict:
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in _target(node["$ref"]):
            target = target[part]
        node = target
        seen += 1
        assert seen < 20, "reference loop"
    return node


def test_the_document_is_valid_openapi_3_1():
    spec = raw_spec()
    assert spec["openapi"] == "3.1.0"
    errors = [f"{list(e.path)}: {e.message}" for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert not errors, "\n".join(errors[:20])


def test_the_expanded_document_is_valid_too():
    errors = [e.message for e in OpenAPIV31SpecValidator(expanded_spec()).iter_errors()]
    assert not errors, "\n".join(errors[:20])


def test_operation_ids_are_unique():
    ids = [item[m]["operationId"] for item in expanded_spec()["paths"].values() for m in METHODS if m in item]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_v3_path_is_also_served_under_r0_and_nothing_else_is():
    for path, item in raw_spec()["paths"].items():
        if path.startswith(V3_PREFIX + "/"):
            assert item.get(ALSO_SERVED) == "/_matrix/client/r0", path
        else:
            assert ALSO_SERVED not in item, path


def test_every_reference_resolves():
    spec = raw_spec()
    for ref in _refs(spec):
        _deref(spec, {"$ref": ref})


# Fields some error codes carry besides `errcode` and `error`.
EXTRA_ERROR_FIELDS = {"M_WRONG_ROOM_KEYS_VERSION": {"current_version"}}


def _is_matrix_error(schema: dict) -> bool:
    """The standard error body: `errcode` (from a listed set), `error`,
    optionally `retry_after_ms`, nothing else (but `current_version` for
    `M_WRONG_ROOM_KEYS_VERSION` alone)."""
    props = schema.get("properties", {})
    codes = props.get("errcode", {}).get("enum", [])
    extra = set.intersection(*(EXTRA_ERROR_FIELDS.get(c, set()) for c in codes)) if codes else set()
    return (
        schema.get("type") == "object"
        and set(schema.get("required", [])) >= {"errcode", "error"} | extra
        and schema.get("additionalProperties") is False
        and set(props) <= {"errcode", "error", "retry_after_ms"} | extra
        and props["error"].get("type") == "string"
        and bool(codes)
        and all(re.fullmatch(r"M_[A-Z_]+", c) for c in codes)
    )


def test_every_error_response_uses_the_error_schema():
    """4xx and 5xx answers are Matrix errors with their possible errcodes
    listed (or, for user-interactive authentication, the flows), each described."""
    spec = raw_spec()
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            for status, response in item[method]["responses"].items():
                response = _deref(spec, response)
                assert response.get("description"), (path, method, status)
                if not status.startswith(("4", "5")):
                    continue
                schema = response["content"]["application/json"]["schema"]
                options = schema.get("oneOf", [schema])
                for option in options:
                    if option.get("$ref") == "#/components/schemas/AuthenticationResponse":
                        assert status == "401", (path, method, status)
                        continue
                    assert _is_matrix_error(_deref(spec, option)), (path, method, status, option)


def test_error_codes_match_http_statuses():
    """The errcode-to-status mapping of homeserver/src/api/error.rs."""
    expected = {
        "M_FORBIDDEN": {"403"}, "M_GUEST_ACCESS_FORBIDDEN": {"403"},
        "M_MISSING_TOKEN": {"401"}, "M_UNKNOWN_TOKEN": {"401"},
        "M_NOT_FOUND": {"404"}, "M_TOO_LARGE": {"413"}, "M_LIMIT_EXCEEDED": {"429"},
        "M_CANNOT_OVERWRITE_MEDIA": {"409"}, "M_NOT_YET_UPLOADED": {"504"},
        "M_UNKNOWN": {"502"},  # another server failed us (500s are bugs, not listed)
        "M_ROOM_IN_USE": {"400", "409"},  # 409 from PUT /directory/room, as the spec says
        "M_WRONG_ROOM_KEYS_VERSION": {"403"},
        "M_THREEPID_DENIED": {"403"}, "M_USER_DEACTIVATED": {"403"},
    }
    spec = raw_spec()
    for path, item in spec["paths"].items():
        for method in METHODS:
            for status, response in item.get(method, {}).get("responses", {}).items():
                response = _deref(spec, response)
                if not status.startswith("4") and not status.startswith("5"):
                    continue
                for option in response["content"]["application/json"]["schema"].get("oneOf", [response["content"]["application/json"]["schema"]]):
                    if option.get("$ref") == "#/components/schemas/AuthenticationResponse":
                        continue  # a failed UIA stage's errcode, in a 401 (checked above)
                    target = _deref(spec, option)
                    for code in target.get("properties", {}).get("errcode", {}).get("enum", []):
                        assert status in expected.get(code, {"400"}), (path, method, status, code)


def test_authenticated_operations_document_401_and_public_ones_do_not_need_it():
    spec = raw_spec()
    assert spec["security"] == [{"accessTokenBearer": []}, {"accessTokenQuery": []}]
    assert set(spec["components"]["securitySchemes"]) == {"accessTokenBearer", "accessTokenQuery"}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            public = op.get("security") == []
            if not public:
                assert "401" in op["responses"], f"{method} {path} needs a token but documents no 401"


def test_json_bodies_document_the_json_errors():
    """An operation that parses a JSON body can answer 400 and 413."""
    spec = raw_spec()
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if not op or "requestBody" not in op:
                continue
            body = _deref(spec, op["requestBody"])
            if "application/json" not in body["content"]:
                continue
            assert "400" in op["responses"] and "413" in op["responses"], f"{method} {path}"


def test_extensions_are_marked():
    spec = raw_spec()
    text = (spec["info"]["description"])
    for name in ("tern.delivered", "x-tern-extension", "text/event-stream", "tern.presence"):
        assert name in text
    sync = spec["paths"]["/_matrix/client/v3/sync"]["get"]
    assert sync["responses"]["200"]["content"]["text/event-stream"]["x-tern-extension"] is True
    for path, item in spec["paths"].items():
        if re.match(r"^/_matrix/client/unstable/tern/|^/_tern/|^/_matrix/client/unstable/org\.matrix\.msc2108/", path):
            for method in METHODS:
                if method in item:
                    assert item[method].get("x-tern-extension") is True, f"{method} {path}"


def test_legacy_media_endpoints_are_deprecated():
    spec = raw_spec()
    for path in ("/_matrix/media/v3/download/{serverName}/{mediaId}",
                 "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
                 "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}",
                 "/_matrix/media/v3/config"):
        assert spec["paths"][path]["get"]["deprecated"] is True, path
