"""Session ids the server issues, so a conversation belongs to whoever started it.

A session id is `s1.<nonce>.<tag>`: 128 random bits and a 128-bit HMAC-SHA256 tag over them and the caller, keyed
by the server's session secret (CHATBOT_SESSION_SECRET; generated per process when unset, so replicas must share
one for a conversation to continue on another replica). Any replica with the secret verifies an id without a
lookup. The caller is the fingerprint of the API key the request carried (empty without one): an id created with
one key does not verify with another, so a session is bound to the key that created it.

A request without a session id gets a new one with its answer; an id this server did not issue (or issued to
another key) is refused with 403 `invalid_session` before anything is read or stored. Reading a conversation
(`POST /conversation`) verifies the id the same way; a verified id with no stored turns is 404 `invalid_session`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from chatbot_model.config import Settings
from chatbot_model.server.deps import settings_of
from chatbot_model.server.errors import ServerError

VERSION = "s1"
NONCE_BYTES = 16  # 128 random bits
TAG_BYTES = 16
_SHAPE = re.compile(r"^s1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}$")
SESSION_ID_PATTERN = _SHAPE.pattern
_process_secret = secrets.token_bytes(32)  # used when CHATBOT_SESSION_SECRET is unset: this process only


class InvalidSession(ServerError):
    status, code = 403, "invalid_session"


class SessionNotFound(InvalidSession):
    """A verified session with no stored turns (pruned, or never stored): same code, so a client starts afresh."""

    status = 404


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def caller_fingerprint(credential: str | None) -> bytes:
    """What a session is bound to: a hash of the bearer credential the request carried (b"" without one)."""
    return hashlib.sha256(credential.encode()).digest() if credential else b""


class SessionIds:
    """Issue and verify session ids with one secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the session secret needs at least 16 bytes")
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionIds":
        value = settings.session_secret.get_secret_value() if settings.session_secret else ""
        return cls(value.encode() if value else _process_secret)

    def _tag(self, nonce: bytes, caller: bytes) -> bytes:
        return hmac.new(self._secret, b"session\x00" + nonce + b"\x00" + caller, hashlib.sha256).digest()[:TAG_BYTES]

    def issue(self, caller: bytes = b"") -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return f"{VERSION}.{_b64(nonce)}.{_b64(self._tag(nonce, caller))}"

    def verify(self, session_id: str, caller: bytes = b"") -> bool:
        if not isinstance(session_id, str) or not _SHAPE.match(session_id):
            return False
        _, nonce, tag = session_id.split(".")
        try:
            nonce_bytes, tag_bytes = _unb64(nonce), _unb64(tag)
        except (binascii.Error, ValueError):
            return False
        return len(nonce_bytes) == NONCE_BYTES and hmac.compare_digest(tag_bytes, self._tag(nonce_bytes, caller))


def session_ids(app) -> SessionIds:
    """The app's issuer (built once from its settings)."""
    issuer = getattr(app.state, "session_ids", None)
    if issuer is None:
        issuer = app.state.session_ids = SessionIds.from_settings(settings_of(app))
    return issuer


def caller_of(request) -> bytes:
    """The request's caller for session binding: its bearer credential's fingerprint when the server has a key."""
    key = settings_of(request.app).api_key
    if key is None or not key.get_secret_value():
        return b""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return caller_fingerprint(credential.strip() if scheme.lower() == "bearer" else None)


def session_for(request, session_id: str | None) -> str:
    """The request's session: a new id when it sent none, else the one it sent once verified (403 otherwise)."""
    if session_id is None:
        return session_ids(request.app).issue(caller_of(request))
    return own_session(request, session_id)


def own_session(request, session_id: str) -> str:
    """`session_id` once verified as issued by this server to the request's caller; 403 `invalid_session`
    otherwise (decided by the tag alone: nothing is read, so a refusal says nothing about what is stored)."""
    if not session_ids(request.app).verify(session_id, caller_of(request)):
        raise InvalidSession("session_id was not issued by this server (or belongs to another API key); omit "
                             "session_id to start a conversation: the answer carries its new session_id")
    return session_id
