"""Fuzzing the running server from the spec with schemathesis.

Used by `test_fuzz.py` (a bounded run) and from the command line for longer
runs (see docs/fuzzing.md):

    TERN_BIN=target/release/homeserver python tests/contract/fuzz.py --max-time 600 --report-dir /tmp/fuzz

It starts its own server, makes a user with a room, a message, an alias,
media, a filter, a push rule, a key backup, a room tag and a profile field,
and gives their IDs (and the user's device ID) to schemathesis as
dictionaries, so that about half of the generated requests name things that
exist and reach past the "unknown room" answers. Checks: no 5xx, and every
status, media type, header and body as the spec documents them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract import Contract  # noqa: E402
from flows import png, q, register, unique  # noqa: E402
from spec import SPEC_PATH  # noqa: E402
from tern_server import TernServer  # noqa: E402

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
# Logging out would end the fuzzer's own session; the MSC2108 stream never
# ends (its description is checked by test_sse.py).
EXCLUDED_OPERATIONS = ["logout", "logout_all", "syncStream"]


@dataclass
class FuzzResult:
    returncode: int
    output: str
    report_dir: Path
    command: list[str]


def prepare(base_url: str) -> tuple[str, dict[str, list[str]]]:
    """A user with things to name; returns their token and the IDs by parameter."""
    c = Contract(base_url)
    fuzzer = register(c, unique("fuzzer"))
    friend = register(c, unique("friend"))
    token = fuzzer["access_token"]
    room = c.call("POST", "/_matrix/client/v3/createRoom", token=token,
                  json_body={"name": "Fuzzing", "invite": [friend["user_id"]]}).json()["room_id"]
    c.call("POST", f"/_matrix/client/v3/join/{q(room)}", token=friend["access_token"], json_body={})
    event = c.call("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/{unique('t')}", token=friend["access_token"],
                   json_body={"msgtype": "m.text", "body": "fuzz me"}).json()["event_id"]
    alias = f"#{unique('fuzz')}:localhost"
    c.call("PUT", f"/_matrix/client/v3/directory/room/{q(alias)}", token=token, json_body={"room_id": room})
    uri = c.call("POST", "/_matrix/media/v3/upload", token=token, data=png(), headers={"Content-Type": "image/png"}).json()["content_uri"]
    media_id = uri.rsplit("/", 1)[1]
    filter_id = c.call("POST", f"/_matrix/client/v3/user/{q(fuzzer['user_id'])}/filter", token=token,
                       json_body={"room": {"timeline": {"limit": 5}}}).json()["filter_id"]
    c.call("PUT", "/_matrix/client/v3/pushrules/global/content/fuzzrule", token=token, json_body={"actions": ["notify"], "pattern": "fuzz"})
    version = c.call("POST", "/_matrix/client/v3/room_keys/version", token=token, json_body={
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "fuzz"}}).json()["version"]
    c.call("PUT", f"/_matrix/client/v3/room_keys/keys/{q(room)}/fuzzsession", token=token, params={"version": version}, json_body={
        "first_message_index": 0, "forwarded_count": 0, "is_verified": False, "session_data": {"ciphertext": "x"}})
    me = q(fuzzer["user_id"])
    c.call("PUT", f"/_matrix/client/v3/user/{me}/rooms/{q(room)}/tags/u.fuzz", token=token, json_body={"order": 0.5})
    c.call("PUT", f"/_matrix/client/v3/profile/{me}/m.tz", token=token, json_body={"m.tz": "Europe/Paris"})
    return token, {
        "roomId": [room],
        "roomIdOrAlias": [room, alias],
        "roomAlias": [alias],
        "userId": [fuzzer["user_id"], friend["user_id"]],
        "eventId": [event],
        "serverName": ["localhost"],
        "mediaId": [media_id],
        "filterId": [filter_id],
        "ruleId": ["fuzzrule", ".m.rule.master", ".m.rule.contains_user_name"],
        "receiptType": ["m.read", "m.read.private", "tern.delivered"],
        "eventType": ["m.room.message", "m.room.name", "m.room.topic", "org.example.fuzz"],
        "deviceId": [fuzzer["device_id"]],
        "version": [version],
        "sessionId": ["fuzzsession"],
        "tag": ["u.fuzz"],
        "keyName": ["m.tz"],
    }


def write_config(path: Path, ids: dict[str, list[str]]) -> None:
    lines = ["[parameters]"]
    for name in ids:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}')
    for name, values in ids.items():
        lines.append(f"\n[dictionaries.{name}]")
        lines.append("values = " + json.dumps(values))
    path.write_text("\n".join(lines) + "\n")


def run(base_url: str, *, max_time: int, report_dir: Path, seed: int | None = None, workers: int = 1,
        timeout: float | None = None) -> FuzzResult:
    token, ids = prepare(base_url)
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "schemathesis.toml"
    write_config(config, ids)
    cli = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which("schemathesis")
    if cli is None:
        raise RuntimeError("the schemathesis command is not installed (pip install -r tests/contract/requirements.txt)")
    command = [
        cli, "--config-file", str(config), "run", str(SPEC_PATH),
        "--url", base_url,
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS),
        "--max-time", str(max_time),
        "--workers", str(workers),
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--report", "junit,ndjson",
        "--report-dir", str(report_dir),
        "--output-truncate", "false",
    ]
    for op in EXCLUDED_OPERATIONS:
        command += ["--exclude-operation-id", op]
    if seed is not None:
        command += ["--seed", str(seed)]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false",
           "HYPOTHESIS_STORAGE_DIRECTORY": str(report_dir / ".hypothesis")}
    # Run in the report folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=report_dir,
                          timeout=timeout or max_time * 3 + 120)
    output = done.stdout + done.stderr
    (report_dir / "output.txt").write_text(output)
    shown = [c if not c.startswith("Authorization") else "Authorization: Bearer <token>" for c in command]
    return FuzzResult(done.returncode, output, report_dir, shown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=int, default=600, help="seconds of fuzzing")
    parser.add_argument("--report-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="tern-fuzz-")))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    server = TernServer(Path(tempfile.mkdtemp(prefix="tern-fuzz-server-"))).start()
    try:
        result = run(server.base_url, max_time=args.max_time, report_dir=args.report_dir, seed=args.seed, workers=args.workers)
        alive = server.alive()
    finally:
        server.stop()
    print(result.output)
    print("command:", " ".join(result.command))
    print("reports:", result.report_dir, "server log:", server.log_path)
    if not alive:
        print("THE SERVER DIED during the run")
        return 1
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
