"""The Server-Server API description, `api-spec/federation.yaml`: valid
OpenAPI 3.1, listing exactly the routes in `homeserver/src/api/federation/`,
and matching what a federating server really answers."""

from __future__ import annotations

import functools
import json

import pytest
import requests
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_spec_validator import OpenAPIV31SpecValidator

from routes import API_DIR, normalise, served_routes
from spec import REPO, operations

FEDERATION_SPEC = REPO / "api-spec" / "federation.yaml"


@functools.lru_cache(maxsize=1)
def _spec() -> dict:
    return yaml.safe_load(FEDERATION_SPEC.read_text())


def test_the_federation_spec_is_valid_openapi_3_1():
    OpenAPIV31SpecValidator(_spec()).validate()


def test_the_federation_spec_lists_exactly_the_federation_routes():
    served = {(m, normalise(p)) for m, p in served_routes(API_DIR / "federation", min_routes=5)}
    specified = {(m, normalise(p)) for m, p in operations(_spec())}
    assert served - specified == set(), "served but not specified"
    assert specified - served == set(), "specified but not served"


@pytest.fixture(scope="module")
def federating(tern_factory, tmp_path_factory):
    config = tmp_path_factory.mktemp("federation") / "tern.toml"
    config.write_text('[federation]\nenabled = true\nwell_known_server = "matrix.localhost:443"\n')
    return tern_factory(extra_args=["--config", str(config)])


def _checked(base_url: str, method: str, path: str, *, expect: int, body=None) -> requests.Response:
    """One request, its answer validated against the federation spec."""
    spec = dict(_spec(), servers=[{"url": base_url}])
    kwargs = {"timeout": 30}
    if body is not None:
        kwargs["data"] = json.dumps(body)
        kwargs["headers"] = {"Content-Type": "application/json"}
    resp = requests.request(method, base_url + path, **kwargs)
    where = f"{method} {path} -> {resp.status_code} {resp.text[:300]!r}"
    assert resp.status_code == expect, where
    OpenAPI.from_dict(spec).validate_response(RequestsOpenAPIRequest(resp.request), RequestsOpenAPIResponse(resp))
    return resp


def test_real_answers_match_the_federation_spec(federating):
    url = federating.base_url
    own = _checked(url, "GET", "/_matrix/key/v2/server", expect=200).json()
    assert own["server_name"] == "localhost"
    one = _checked(url, "GET", "/_matrix/key/v2/query/localhost", expect=200).json()
    assert one["server_keys"][0]["verify_keys"] == own["verify_keys"]
    batch = _checked(url, "POST", "/_matrix/key/v2/query", expect=200, body={"server_keys": {"localhost": {}}}).json()
    assert [d["server_name"] for d in batch["server_keys"]] == ["localhost"]
    _checked(url, "GET", "/_matrix/key/v2/query/bad%20name", expect=400)
    too_many = {"server_keys": {f"s{i}.example": {} for i in range(101)}}
    _checked(url, "POST", "/_matrix/key/v2/query", expect=413, body=too_many)
    assert _checked(url, "GET", "/_matrix/federation/v1/version", expect=200).json()["server"]["name"] == "Tern"
    well_known = _checked(url, "GET", "/.well-known/matrix/server", expect=200).json()
    assert well_known == {"m.server": "matrix.localhost:443"}
    # Unsigned requests to the signed routes.
    for path in (
        "/_matrix/federation/v1/query/profile?user_id=%40a%3Alocalhost",
        "/_matrix/federation/v1/query/directory?room_alias=%23a%3Alocalhost",
        "/_matrix/federation/v1/publicRooms",
        "/_matrix/federation/v1/media/download/abc",
        "/_matrix/federation/v1/media/thumbnail/abc?width=32&height=32",
        "/_matrix/federation/v1/make_join/%21r%3Alocalhost/%40a%3Alocalhost?ver=10&ver=11",
        "/_matrix/federation/v1/make_leave/%21r%3Alocalhost/%40a%3Alocalhost",
        "/_matrix/federation/v1/event/%24e",
        "/_matrix/federation/v1/state/%21r%3Alocalhost?event_id=%24e",
        "/_matrix/federation/v1/state_ids/%21r%3Alocalhost?event_id=%24e",
        "/_matrix/federation/v1/event_auth/%21r%3Alocalhost/%24e",
        "/_matrix/federation/v1/backfill/%21r%3Alocalhost?v=%24e&limit=10",
        "/_matrix/federation/v1/user/devices/%40a%3Alocalhost",
    ):
        refused = _checked(url, "GET", path, expect=401).json()
        assert refused["errcode"] == "M_UNAUTHORIZED"
    refused = _checked(url, "POST", "/_matrix/federation/v1/publicRooms", expect=401, body={"limit": 5}).json()
    assert refused["errcode"] == "M_UNAUTHORIZED"
    transaction = {"origin": "elsewhere.example", "origin_server_ts": 1, "pdus": []}
    refused = _checked(url, "PUT", "/_matrix/federation/v1/send/t1", expect=401, body=transaction).json()
    assert refused["errcode"] == "M_UNAUTHORIZED"
    event = {"type": "m.room.member", "room_id": "!r:localhost", "sender": "@a:elsewhere.example"}
    for method, path, body in (
        ("PUT", "/_matrix/federation/v2/send_join/%21r%3Alocalhost/%24e", event),
        ("PUT", "/_matrix/federation/v2/send_leave/%21r%3Alocalhost/%24e", event),
        (
            "PUT",
            "/_matrix/federation/v2/invite/%21r%3Alocalhost/%24e",
            {"room_version": "11", "event": event, "invite_room_state": []},
        ),
        (
            "POST",
            "/_matrix/federation/v1/get_missing_events/%21r%3Alocalhost",
            {"earliest_events": [], "latest_events": ["$e"], "limit": 10, "min_depth": 0},
        ),
        ("POST", "/_matrix/federation/v1/user/keys/query", {"device_keys": {"@a:localhost": []}}),
        (
            "POST",
            "/_matrix/federation/v1/user/keys/claim",
            {"one_time_keys": {"@a:localhost": {"DEV": "signed_curve25519"}}},
        ),
    ):
        refused = _checked(url, method, path, expect=401, body=body).json()
        assert refused["errcode"] == "M_UNAUTHORIZED"


def test_openid_tokens_tell_a_third_party_who_the_user_is(federating):
    url = federating.base_url
    body = {"username": "openid-user", "password": "correct horse battery staple"}
    first = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=30)
    body["auth"] = {"type": "m.login.dummy", "session": first.json()["session"]}
    account = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=30).json()
    headers = {"Authorization": f"Bearer {account['access_token']}"}
    user = account["user_id"]
    path = f"/_matrix/client/v3/user/{requests.utils.quote(user)}/openid/request_token"
    token = requests.post(url + path, json={}, headers=headers, timeout=30).json()
    assert token["token_type"] == "Bearer" and token["matrix_server_name"] == "localhost", token
    assert token["expires_in"] == 3600
    # Another user's token: refused.
    other = "/_matrix/client/v3/user/%40someone%3Alocalhost/openid/request_token"
    refused = requests.post(url + other, json={}, headers=headers, timeout=30)
    assert (refused.status_code, refused.json()["errcode"]) == (403, "M_FORBIDDEN")

    info = _checked(url, "GET", f"/_matrix/federation/v1/openid/userinfo?access_token={token['access_token']}", expect=200)
    assert info.json() == {"sub": user}
    # The access token is not an OpenID token, nor is anything made up.
    for wrong in (account["access_token"], "made-up"):
        unknown = _checked(url, "GET", f"/_matrix/federation/v1/openid/userinfo?access_token={wrong}", expect=401)
        assert unknown.json()["errcode"] == "M_UNKNOWN_TOKEN"
    missing = _checked(url, "GET", "/_matrix/federation/v1/openid/userinfo", expect=400)
    assert missing.json()["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")
