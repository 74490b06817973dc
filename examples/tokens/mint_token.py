#!/usr/bin/env python3
"""Mints a Switchboard token (HS256 JWT) in a Python backend, with the standard library only.

In your app: call mint_token() in the view that serves the page (or an /api/token view)
after your own login check, and hand the token to the browser. (With PyJWT installed,
jwt.encode(claims, secret, algorithm="HS256") makes the same token.)

    SWITCHBOARD_AUTH_SECRET=... python3 examples/tokens/mint_token.py alice 'chat:*'

Prints the token. The secret is the server's --auth-secret (at least 32 bytes); it never
leaves your backend. Verified by crates/cli/tests/examples.rs against a real server.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(secret: str, user: str, rooms: dict | None = None, ttl_seconds: int = 3600) -> str:
    """user: the `sub` claim; rooms: room pattern -> rights (join, publish, presence), or None
    for every right in every room; ttl_seconds: the server closes with 4001 at expiry unless the
    client sends a `refresh` with a new token."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": user, "exp": int(time.time()) + ttl_seconds}
    if rooms is not None:
        claims["rooms"] = rooms
    payload = _b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


if __name__ == "__main__":
    secret = os.environ.get("SWITCHBOARD_AUTH_SECRET")
    if not secret or len(sys.argv) < 2:
        print("usage: SWITCHBOARD_AUTH_SECRET=... python3 mint_token.py USER [ROOM_PATTERN]", file=sys.stderr)
        sys.exit(2)
    pattern = sys.argv[2] if len(sys.argv) > 2 else None
    rooms = {pattern: ["join", "publish", "presence"]} if pattern else None
    print(mint_token(secret, sys.argv[1], rooms))
