"""An optional login for lab members: HTTP basic auth in front of every request.

Credentials never live in the repository. They come from, in this order:

``auth_file`` argument or ``$TCR_DASHBOARD_AUTH_FILE``
    a file of ``user:password-hash`` lines (``#`` starts a comment), the hashes made by
    ``python -m dashboard.auth hash`` (werkzeug's salted scrypt/pbkdf2);
``$TCR_DASHBOARD_USERS``
    ``user:password`` pairs separated by commas or newlines, for a secret injected into the
    environment (hashed when read).

With neither set the dashboard has no login, and it listens on 127.0.0.1 only unless told
otherwise. Basic auth sends the password with every request: behind anything but a loopback
address or an SSH tunnel, put the dashboard behind HTTPS.

An empty password is never accepted (``hash`` refuses to make one, a login with one fails).
Failed logins are rate-limited per client address (flask-limiter, ``LOGIN_LIMIT``): past the
limit every request from that address gets 429 until the window has passed. A request without
credentials (the browser's first, which asks for them) does not count. Passwords are checked
in constant time, and an unknown user costs the same hash check as a known one.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.security import check_password_hash, generate_password_hash

from tcr_pipeline.errors import InputError

AUTH_FILE_ENV = "TCR_DASHBOARD_AUTH_FILE"
USERS_ENV = "TCR_DASHBOARD_USERS"
REALM = "tcr-pipeline dashboard"
LOGIN_LIMIT = "10 per minute"  # failed logins per client address


class AuthConfigError(InputError):
    """A credentials file or variable that cannot be read (the CLI reports it in one line)."""


def hash_password(password: str) -> str:
    """A salted, slow hash (werkzeug's scrypt) for a credentials file; an empty password is refused."""
    if not password:
        raise ValueError("an empty password is not allowed")
    return generate_password_hash(password)


def _digest(password: str) -> str:
    # A password from the environment is already in plain text beside the process: a slow hash
    # protects nothing there, so it is kept as a salted single-round hash only to avoid holding
    # the plain text (and checked through the same path as the file's hashes).
    return generate_password_hash(password, method="pbkdf2:sha256:1")


def parse_credentials(text: str, hashed: bool) -> dict[str, str]:
    """``user:secret`` entries (one per line or comma-separated) as ``{user: password hash}``."""
    users: dict[str, str] = {}
    separators = "\n" if hashed else "\n,"
    entries = [text]
    for separator in separators:
        entries = [part for entry in entries for part in entry.split(separator)]
    for number, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        user, colon, secret = entry.partition(":")
        if not colon or not user.strip() or not secret:
            raise AuthConfigError(f"entry {number}: expected user:{'hash' if hashed else 'password'}")
        users[user.strip()] = secret.strip() if hashed else _digest(secret)
    return users


def load_credentials(
    auth_file: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Users and password hashes from a file or the environment, or None for no login."""
    environ = os.environ if environ is None else environ
    path = auth_file or environ.get(AUTH_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthConfigError(f"{path}: cannot read the credentials file ({exc.strerror})") from None
        users = parse_credentials(text, hashed=True)
        if not users:
            raise AuthConfigError(f"{path}: no users in the credentials file")
        return users
    if environ.get(USERS_ENV):
        return parse_credentials(environ[USERS_ENV], hashed=False)
    return None


def enable_basic_auth(server: Flask, users: Mapping[str, str], limit: str = LOGIN_LIMIT) -> Limiter:
    """Refuse every request without a valid ``Authorization: Basic`` header for one of ``users``;
    more than ``limit`` failed logins from one address are answered 429 (returns the limiter)."""
    accepted: set[bytes] = set()  # digests of checked user:password pairs (hash checks are slow)
    lock = threading.Lock()
    # An unknown user is checked against this, so the answer takes as long as for a known one.
    decoy = generate_password_hash(os.urandom(16).hex())
    # Registered before the login check, so a client over the limit is refused before its
    # password is checked; only requests that carried wrong credentials are counted.
    limiter = Limiter(
        get_remote_address,
        app=server,
        storage_uri="memory://",
        application_limits=[limit],
        application_limits_deduct_when=lambda _: bool(g.get("tcr_failed_login", False)),
        headers_enabled=False,
    )

    @server.before_request
    def _require_login() -> Response | None:
        credentials = request.authorization
        if credentials is not None and credentials.type == "basic":
            user, password = credentials.username or "", credentials.password or ""
            digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
            with lock:
                known = any(hmac.compare_digest(digest, d) for d in accepted)
            if known and password:
                return None
            valid = check_password_hash(users.get(user, decoy), password) and user in users
            if valid and password:
                with lock:
                    accepted.add(digest)
                return None
            g.tcr_failed_login = True
        return Response(
            "login required", 401, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        )

    return limiter


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.auth hash [USER]``: print a ``user:hash`` line for a credentials file."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "hash":
        print("usage: python -m dashboard.auth hash [USER]  (reads the password from the terminal)")
        return 2
    user = args[1] if len(args) > 1 else input("user: ")
    password = getpass.getpass("password: ")
    if not password:
        print("an empty password is not allowed", file=sys.stderr)
        return 1
    if password != getpass.getpass("again: "):
        print("the passwords differ", file=sys.stderr)
        return 1
    print(f"{user}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
