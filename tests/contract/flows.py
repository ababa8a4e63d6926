"""Small helpers shared by the contract, SSE and fuzzing tests."""

from __future__ import annotations

import struct
import uuid
import zlib
from urllib.parse import quote


def q(value: str) -> str:
    """Percent-encodes a path segment (`!room:server` -> `%21room%3Aserver`)."""
    return quote(value, safe="")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def png(width: int = 64, height: int = 48) -> bytes:
    """A real PNG image (a colour gradient), made without any image library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def register(contract, username: str | None = None, password: str = "correct horse battery staple") -> dict:
    """Registers through the two-step UIA flow, checking both answers."""
    body = {"password": password}
    if username:
        body["username"] = username
    first = contract.call("POST", "/_matrix/client/v3/register", json_body=body, expect=401)
    body["auth"] = {"type": "m.login.dummy", "session": first.json()["session"]}
    account = contract.call("POST", "/_matrix/client/v3/register", json_body=body).json()
    account["password"] = password
    return account
