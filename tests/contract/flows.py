"""Small helpers shared by the contract, SSE and fuzzing tests (and signing
JSON with ed25519 for the end-to-end encryption endpoints)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


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


def b64(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and signatures."""
    return base64.b64encode(data).decode().rstrip("=")


def canonical_json(obj: dict) -> bytes:
    """What a Matrix signature covers: the object without `signatures` and
    `unsigned`, as canonical JSON."""
    signed = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Ed25519Key:
    """An ed25519 key pair that signs JSON objects as Matrix clients do."""

    def __init__(self):
        self.private = Ed25519PrivateKey.generate()
        self.public = b64(self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, obj: dict, user_id: str, key_id: str | None = None) -> dict:
        """Adds this key's signature (`ed25519:<key_id>`, by default the
        public key itself) to `obj` and returns it."""
        name = f"ed25519:{key_id or self.public}"
        signature = b64(self.private.sign(canonical_json(obj)))
        obj.setdefault("signatures", {}).setdefault(user_id, {})[name] = signature
        return obj
