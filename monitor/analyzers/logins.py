"""Logins as the analyzers see them: credentials reduced to what the rules may know, and what answers mean.

Shared by the HTTP, RTSP and Dahua (DHIP/DVRIP) analyzers; not a protocol of its own (no ``PROTOCOLS``).

- :func:`from_authorization` reads an ``Authorization`` value: ``Basic`` is decoded, its password
  checked against the vendors' factory passwords (``monitor/vendors/credentials.py``) and dropped on the
  spot; ``Digest`` gives its ``username``. What comes back, a :class:`Login`, holds the scheme, the account
  and which vendor default matched, never the password nor its encoding.
- :func:`from_ws_security` does the same for an ONVIF WS-Security ``UsernameToken`` in a SOAP body, and
  keeps its ``Nonce`` and ``Created`` (what a replayed token repeats, CVE-2022-30563).
- :func:`rpc_login` reads a Dahua JSON-RPC ``global.login`` (over HTTP ``/RPC2_Login`` or tcp/37777):
  the parameters the exploit matchers need, secrets left out; :func:`rpc_outcome` reads its answer.
- :func:`http_outcome` says what a status code answering a request means for a login: ``success``,
  ``failure``, ``challenge`` or None.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from monitor.vendors.credentials import DefaultCredential, default_credentials

__all__ = [
    "CHALLENGE",
    "FAILURE",
    "SUCCESS",
    "Login",
    "from_authorization",
    "from_ws_security",
    "http_outcome",
    "rpc_login",
    "rpc_outcome",
    "soap_fault_is_auth",
]

SUCCESS: Final = "success"
FAILURE: Final = "failure"
CHALLENGE: Final = "challenge"

MAX_ACCOUNT: Final = 64  # characters of an account name kept (a longer one is garbage or an attack)
_DIGEST_USER_RE: Final = re.compile(r'(?i)(?:^|[\s,])username\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_PRINTABLE_RE: Final = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class Login:
    """The credentials a request carried, as far as a rule may know them.

    ``scheme`` is ``Basic``, ``Digest``, ``WS-UsernameToken``, ``Dahua`` (a JSON-RPC login)...;
    ``account`` the user name (printable, bounded), None when the scheme does not say; ``default`` the
    vendor factory password the (cleartext) password turned out to be; ``nonce`` and ``created``, a
    WS-Security token's."""

    scheme: str
    account: str | None = None
    default: DefaultCredential | None = None
    nonce: str | None = None
    created: str | None = None


def _account(text: str | None) -> str | None:
    if text is None:
        return None
    return _PRINTABLE_RE.sub("?", text[:MAX_ACCOUNT])


def from_authorization(value: str | None) -> Login | None:
    """The login of an ``Authorization`` header value (HTTP or RTSP), or None without one."""
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        return None
    lowered = scheme.lower()
    if lowered == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            return Login("Basic")
        account, colon, password = decoded.partition(":")
        if not colon:
            return Login("Basic", _account(account))
        default = default_credentials().match(account, password)
        # The password and the decoded value go out of scope here: nothing else keeps them.
        return Login("Basic", _account(account), default)
    if lowered == "digest":
        m = _DIGEST_USER_RE.search(rest)
        user = None if m is None else (m.group(1) if m.group(1) is not None else m.group(2))
        return Login("Digest", _account(user))
    return Login(scheme[:32])


def http_outcome(login: Login | None, status: int, stale: bool) -> str | None:
    """What an HTTP/RTSP status answering a request with ``login`` says about the login.

    A 401 to a request without credentials is the server asking for them (the first half of Digest, a
    recorder's normal challenge-response), as is a 401 saying the Digest nonce went stale; a 401 to a
    request that carried credentials is a refused login; a 2xx or 3xx to one is a login that worked. A 403
    says nothing about the password (RFC 9110 15.5.4: the server understood who asks and refuses the
    operation): Hikvision answers it to an admin asking for what the model does not do ("Invalid
    Operation"), hundreds of times a day under a VMS. Without credentials and without a 401, no login is
    involved."""
    if status in (401, 407):
        if login is None or stale:
            return CHALLENGE
        return FAILURE
    if login is None:
        return None
    if 200 <= status < 400:
        return SUCCESS
    return None


# ------------------------------------------------------------------------------ ONVIF WS-Security

_PREFIX: Final = rb"<(?:[\w.-]+:)?"
_TOKEN_RE: Final = re.compile(
    _PREFIX + rb"UsernameToken\b[^>]{0,512}>(.{0,4096}?)</(?:[\w.-]+:)?UsernameToken\s*>", re.S
)


def _element(block: bytes, name: bytes) -> tuple[bytes, bytes] | None:
    """(attributes, text) of the first ``<prefix:name ...>text</prefix:name>`` in ``block``."""
    m = re.search(_PREFIX + name + rb"\b([^>]{0,512})>([^<]{0,1024})</(?:[\w.-]+:)?" + name + rb"\s*>", block)
    return None if m is None else (m.group(1), m.group(2))


def _text(raw: bytes, limit: int = 128) -> str:
    return _PRINTABLE_RE.sub("?", raw.decode("utf-8", "replace").strip()[:limit])


def from_ws_security(body: bytes) -> Login | None:
    """The ``UsernameToken`` of a SOAP request body (ONVIF), or None when it has none.

    A ``PasswordText`` password is checked against the vendor defaults and dropped; a ``PasswordDigest``
    is a hash of the password, nonce and time and says nothing more."""
    m = _TOKEN_RE.search(body)
    if m is None:
        return None
    block = m.group(1)
    user = _element(block, b"Username")
    password = _element(block, b"Password")
    nonce = _element(block, b"Nonce")
    created = _element(block, b"Created")
    account = _text(user[1], MAX_ACCOUNT) if user is not None else None
    default: DefaultCredential | None = None
    if password is not None and account is not None and b"PasswordText" in password[0]:
        clear = password[1].decode("utf-8", "surrogateescape").strip()
        default = default_credentials().match(account, _unescape_xml(clear))
    return Login(
        "WS-UsernameToken",
        account,
        default,
        nonce=_text(nonce[1]) if nonce is not None else None,
        created=_text(created[1], 40) if created is not None else None,
    )


def _unescape_xml(text: str) -> str:
    return (
        text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
        .replace("&apos;", "'")
        .replace("&amp;", "&")
    )


# An ONVIF device refuses a token with a SOAP fault whose subcode is ter:NotAuthorized (ONVIF Core
# 5.11.2.1), or WS-Security's wsse:FailedAuthentication / InvalidSecurityToken.
_AUTH_FAULT_RE: Final = re.compile(rb"NotAuthorized|FailedAuthentication|InvalidSecurityToken|FailedCheck")


def soap_fault_is_auth(body: bytes) -> bool:
    """Does this SOAP answer refuse the request's credentials?"""
    return b"Fault" in body and _AUTH_FAULT_RE.search(body) is not None


# ------------------------------------------------------------------------------ Dahua JSON-RPC login

# The login parameters the exploit matchers read; "password" is reduced to whether it was given.
_RPC_FIELDS: Final = ("userName", "clientType", "loginType", "authorityType", "passwordType", "ipAddr")
MAX_RPC_BODY: Final = 64 * 1024


def _json_object(body: bytes) -> dict[str, Any] | None:
    text = body.strip(b"\x00 \t\r\n")
    if not text.startswith(b"{") or len(text) > MAX_RPC_BODY:
        return None
    try:
        doc = json.loads(text.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return _PRINTABLE_RE.sub("?", str(value)[:MAX_ACCOUNT])
    return None


def rpc_login(body: bytes) -> tuple[tuple[tuple[str, str], ...], Login] | None:
    """A Dahua JSON-RPC login request's parameters and login, or None when ``body`` is not one.

    ``params`` holds ``method`` and the scalar login fields (``clientType``, ``loginType``...) and
    ``password`` as ``given`` or ``empty``; a ``Plain`` password is checked against the vendor
    defaults, then dropped."""
    doc = _json_object(body)
    if doc is None:
        return None
    method = doc.get("method")
    params = doc.get("params")
    if not isinstance(method, str) or not method.endswith("login") or not isinstance(params, dict):
        return None
    out: list[tuple[str, str]] = [("method", _scalar(method) or "")]
    for name in _RPC_FIELDS:
        value = _scalar(params.get(name))
        if value is not None:
            out.append((name, value))
    password = params.get("password")
    out.append(("password", "given" if password not in (None, "") else "empty"))
    account = _scalar(params.get("userName"))
    default: DefaultCredential | None = None
    if account is not None and isinstance(password, str) and params.get("passwordType") == "Plain":
        default = default_credentials().match(account, password)
    return tuple(out), Login("Dahua", account, default)


def rpc_outcome(body: bytes) -> str | None:
    """What a Dahua JSON-RPC login answer says: ``success`` (``"result": true``), ``challenge`` (the
    first step's refusal carrying ``random``/``realm`` for the second), ``failure``, or None when the
    body is not such an answer."""
    doc = _json_object(body)
    if doc is None or "result" not in doc:
        return None
    if doc.get("result") is True:
        return SUCCESS
    params = doc.get("params")
    if isinstance(params, dict) and ("random" in params or "realm" in params):
        return CHALLENGE
    return FAILURE
