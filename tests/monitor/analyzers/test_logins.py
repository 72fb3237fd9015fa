"""Logins as the analyzers reduce them: Basic decoded and checked against the vendor defaults (the password
never kept), Digest's account, WS-Security tokens, Dahua JSON-RPC logins, and what an answer means.

The factory passwords used here are the public ones the data file hashes (vendor manuals, Mirai's table).
"""

from __future__ import annotations

import base64
import json
from importlib import resources

import pytest

from lab import attacks
from monitor.analyzers.logins import (
    CHALLENGE,
    FAILURE,
    SUCCESS,
    Login,
    from_authorization,
    from_ws_security,
    http_outcome,
    rpc_login,
    rpc_outcome,
    soap_fault_is_auth,
)
from monitor.vendors.credentials import DefaultCredentials, default_credentials, hash_password


def test_basic_with_a_factory_password_names_the_default_and_not_the_password() -> None:
    login = from_authorization(attacks.basic_auth("admin", "12345"))
    assert login is not None and login.scheme == "Basic" and login.account == "admin"
    assert login.default is not None and login.default.id == "hikvision-admin-legacy"
    assert login.default.vendor == "hikvision"
    # Nothing the login keeps holds the password or its encoding.
    shown = repr(login) + " ".join(str(getattr(login.default, f)) for f in ("id", "description", "source"))
    assert "12345" not in shown and base64.b64encode(b"admin:12345").decode() not in shown


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("admin", "admin", "dahua-admin"),
        ("888888", "888888", "dahua-local-account-a"),
        ("admin", "", "xiongmai-admin"),
        ("root", "xc3511", "xiongmai-root-2"),
        ("Admin", "111111", "tiandy-admin"),
        ("ADMIN", "123456", "uniview-admin"),  # account names compare without case
    ],
)
def test_vendor_defaults_are_recognised(user: str, password: str, expected: str) -> None:
    login = from_authorization(attacks.basic_auth(user, password))
    assert login is not None and login.default is not None and login.default.id == expected


@pytest.mark.parametrize(
    ("user", "password"), [("admin", "Str0ng-Passw0rd"), ("admin", "123456789"), ("bob", "12345")]
)
def test_other_passwords_are_not_defaults(user: str, password: str) -> None:
    login = from_authorization(attacks.basic_auth(user, password))
    assert login is not None and login.account == user and login.default is None


def test_digest_gives_the_account_only() -> None:
    login = from_authorization(
        attacks.digest_auth_header("admin", "Hikvision", "abc", "/ISAPI/System/status")
    )
    assert login == Login("Digest", "admin")
    # Unquoted and odd spacing, as some DVRs send it.
    assert from_authorization("Digest realm=x,username = operator ,nonce=1") == Login("Digest", "operator")


@pytest.mark.parametrize(
    "value", ["Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer x"]
)
def test_odd_authorization_values_never_raise(value: str) -> None:
    login = from_authorization(value)
    assert login is not None and login.default is None


def test_no_authorization_is_no_login() -> None:
    assert from_authorization(None) is None and from_authorization("   ") is None


def test_data_file_holds_no_cleartext_and_rejects_bad_entries() -> None:
    table = default_credentials()
    assert len(table) >= 15
    text = resources.files("monitor.vendors").joinpath("data/default_credentials.yaml").read_text("utf-8")
    for secret in ("12345", "xc3511", "xmhdipc", "vizxv", "7ujMko0", "tluafed", "klv123", "jvbzd", "hi3518"):
        assert f": {secret}" not in text and f'"{secret}"' not in text, secret
    good = {
        "id": "x", "vendor": "v", "account": "a", "description": "d", "source": "s",
        "salt": "00" * 16, "hash": hash_password(bytes(16), "pw").hex(),
    }  # fmt: skip
    table2 = DefaultCredentials.from_mapping({"version": 1, "algorithm": "sha256", "credentials": [good]})
    assert table2.match("A", "pw") is not None and table2.match("a", "pw2") is None
    with pytest.raises(ValueError, match=r"credentials\[0\]: the salt"):
        DefaultCredentials.from_mapping(
            {"version": 1, "algorithm": "sha256", "credentials": [{**good, "salt": "00"}]}
        )
    with pytest.raises(ValueError, match="used twice"):
        DefaultCredentials.from_mapping({"version": 1, "algorithm": "sha256", "credentials": [good, good]})


@pytest.mark.parametrize(
    ("login", "status", "stale", "expected"),
    [
        (None, 401, False, CHALLENGE),  # the first half of Digest: asked for credentials
        (Login("Digest", "admin"), 401, True, CHALLENGE),  # the nonce went stale: a new one, not a refusal
        (Login("Digest", "admin"), 401, False, FAILURE),
        (Login("Basic", "admin"), 403, False, None),  # the operation refused, not the password
        (Login("Digest", "admin"), 200, False, SUCCESS),
        (Login("Basic", "admin"), 302, False, SUCCESS),
        (None, 200, False, None),
        (None, 404, False, None),
        (Login("Basic", "admin"), 500, False, None),
    ],
)
def test_what_an_answer_means(login: Login | None, status: int, stale: bool, expected: str | None) -> None:
    assert http_outcome(login, status, stale) == expected


def test_ws_security_token() -> None:
    header = attacks.ws_username_token("admin", "secret", b"0123456789abcdef", "2024-05-01T10:00:00Z")
    login = from_ws_security(attacks.onvif_request("cam", header).partition(b"\r\n\r\n")[2])
    assert login is not None and login.scheme == "WS-UsernameToken" and login.account == "admin"
    assert login.nonce == base64.b64encode(b"0123456789abcdef").decode()
    assert login.created == "2024-05-01T10:00:00Z" and login.default is None
    # No token, no login; a PasswordText token with a factory password is recognised and dropped.
    assert from_ws_security(attacks.onvif_request("cam")) is None
    text = (
        b'<wsse:UsernameToken><wsse:Username>admin</wsse:Username><wsse:Password Type="...#PasswordText">'
        b"12345</wsse:Password></wsse:UsernameToken>"
    )
    plain = from_ws_security(text)
    assert plain is not None and plain.default is not None and plain.default.id == "hikvision-admin-legacy"
    assert "12345" not in repr(plain)


def test_soap_faults() -> None:
    assert soap_fault_is_auth(attacks.ONVIF_NOT_AUTHORIZED)
    assert not soap_fault_is_auth(
        b"<s:Envelope><s:Body><GetDeviceInformationResponse/></s:Body></s:Envelope>"
    )
    assert not soap_fault_is_auth(b"<s:Fault><s:Value>ter:InvalidArgVal</s:Value></s:Fault>")


def test_dahua_rpc_login_params_without_the_password() -> None:
    body = attacks.rpc_login_body(
        "admin", client_type="NetKeyboard", password="Not Used", passwordType="Default"
    )
    found = rpc_login(body)
    assert found is not None
    params, login = found
    assert dict(params)["clientType"] == "NetKeyboard" and dict(params)["password"] == "given"
    assert "Not Used" not in repr(params) + repr(login)
    assert login.account == "admin" and login.default is None
    # A Plain login with the factory password is recognised.
    plain = rpc_login(attacks.rpc_login_body("admin", password="admin", passwordType="Plain"))
    assert plain is not None and plain[1].default is not None and plain[1].default.id == "dahua-admin"
    assert rpc_login(b'{"method": "configManager.getConfig", "params": {}}') is None
    assert rpc_login(b"not json") is None and rpc_login(b"[1,2]") is None


def test_dahua_rpc_answers() -> None:
    assert rpc_outcome(b'{"id":1,"params":{"keepAliveInterval":60},"result":true,"session":"abc"}') == SUCCESS
    challenge = {
        "error": {"code": 268632079},
        "params": {"random": "123", "realm": "Login to x"},
        "result": False,
    }
    assert rpc_outcome(json.dumps(challenge).encode()) == CHALLENGE
    assert rpc_outcome(b'{"error":{"code":268632071},"result":false}') == FAILURE
    assert rpc_outcome(b"<html>") is None and rpc_outcome(b'{"id":1}') is None
