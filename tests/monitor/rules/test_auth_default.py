"""``auth.default_credentials``: a login with a vendor's factory password (HTTP and RTSP Basic, ONVIF
PasswordText, Dahua Plain JSON-RPC) names the account and the default, says whether the device accepted it,
and never carries the password, its encoding or the Authorization header."""

from __future__ import annotations

import base64
import json

import pytest

from lab import attacks, personas
from tests.monitor.rules.traffic import ATTACKER, DAHUA, HIK, NS, RECORDER, T0, XM, alerts, exchange, of_rule

RULE = "auth.default_credentials"


def _secrets(user: str, password: str) -> list[str]:
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode(), "Authorization"]


def test_http_basic_factory_password_accepted() -> None:
    req = attacks.http_request(
        "GET", "/ISAPI/System/deviceInfo", HIK.ip, authorization=attacks.basic_auth("admin", "12345")
    )
    (a,) = of_rule(
        alerts(exchange(T0, RECORDER, HIK, 40000, 80, [(req, attacks.http_response(200, b"<DeviceInfo/>"))])),
        RULE,
    )
    assert a["event"]["severity"] == 4 and a["event"]["outcome"] == "success"  # type: ignore[index]
    assert a["user"] == {"name": "admin"}
    cred = a["camwatch"]["default_credential"]  # type: ignore[index]
    assert (
        cred["id"] == "hikvision-admin-legacy" and cred["vendor"] == "hikvision" and cred["scheme"] == "Basic"
    )
    assert "still has its factory password" in str(a["message"])
    text = json.dumps(a)
    assert all(s not in text for s in _secrets("admin", "12345"))


def test_factory_password_refused_is_someone_trying() -> None:
    req = attacks.http_request("GET", "/", XM.ip, authorization=attacks.basic_auth("admin", ""))
    (a,) = of_rule(alerts(exchange(T0, ATTACKER, XM, 40000, 80, [(req, attacks.http_response(401))])), RULE)
    assert (
        a["event"]["outcome"] == "failure" and a["camwatch"]["default_credential"]["id"] == "xiongmai-admin"
    )  # type: ignore[index]
    assert "trying factory passwords" in str(a["message"])


def test_rtsp_basic() -> None:
    url = f"rtsp://{DAHUA.ip}/cam/realmonitor?channel=1&subtype=0"
    auth = f"Authorization: {attacks.basic_auth('888888', '888888')}\r\n"
    turns = [
        (personas.rtsp_request("DESCRIBE", url, 1, auth), personas.rtsp_response(1, "Dahua Rtsp Server"))
    ]
    (a,) = of_rule(alerts(exchange(T0, RECORDER, DAHUA, 40000, 554, turns)), RULE)
    assert (
        a["camwatch"]["default_credential"]["id"] == "dahua-local-account-a"
        and a["network"]["protocol"] == "rtsp"
    )  # type: ignore[index]


def test_dahua_plain_json_login() -> None:
    body = attacks.rpc_login_body("admin", password="admin", passwordType="Plain")
    post = attacks.http_request("POST", "/RPC2_Login", DAHUA.ip, body=body, content_type="application/json")
    (a,) = of_rule(
        alerts(
            exchange(T0, ATTACKER, DAHUA, 40000, 80, [(post, attacks.http_response(200, b'{"result":true}'))])
        ),
        RULE,
    )
    assert a["camwatch"]["default_credential"]["id"] == "dahua-admin" and a["event"]["outcome"] == "success"  # type: ignore[index]


def test_no_answer_seen_is_reported_after_the_hold() -> None:
    req = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", "12345"))
    frames = exchange(T0, ATTACKER, HIK, 40000, 80, [(req, b"")])
    (a,) = of_rule(alerts(frames), RULE)
    assert a["event"]["outcome"] == "unknown" and a["@timestamp"] == "2023-11-14T22:13:25.003Z"  # type: ignore[index]


@pytest.mark.parametrize(
    ("user", "password"), [("admin", "Wint3r-is-coming"), ("operator", "12345"), ("admin", "123456789")]
)
def test_other_passwords_raise_nothing(user: str, password: str) -> None:
    req = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth(user, password))
    assert (
        of_rule(alerts(exchange(T0, RECORDER, HIK, 40000, 80, [(req, attacks.http_response(200))])), RULE)
        == []
    )


def test_digest_cannot_be_checked_and_raises_nothing() -> None:
    auth = attacks.digest_auth_header("admin", "Hikvision", "n", "/")
    req = attacks.http_request("GET", "/", HIK.ip, authorization=auth)
    assert (
        of_rule(alerts(exchange(T0, RECORDER, HIK, 40000, 80, [(req, attacks.http_response(200))])), RULE)
        == []
    )


def test_one_alert_per_device_client_and_default() -> None:
    frames = []
    for i in range(5):
        req = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", "12345"))
        frames += exchange(T0 + i * NS, RECORDER, HIK, 40000 + i, 80, [(req, attacks.http_response(200))])
    assert len(of_rule(alerts(frames), RULE)) == 1


def test_another_vendor_s_default_is_called_a_well_known_default() -> None:
    # Hikvision's old default on a Dahua camera: weak, and worth the alert, but not "its factory password".
    req = attacks.http_request(
        "GET", "/cgi-bin/magicBox.cgi", DAHUA.ip, authorization=attacks.basic_auth("admin", "12345")
    )
    frames = exchange(
        T0, RECORDER, DAHUA, 40000, 80, [(req, attacks.http_response(200, b"ok", server="lighttpd"))]
    )
    (a,) = of_rule(alerts(frames), RULE)
    message = str(a["message"])
    assert "a well-known default password, another vendor's (Hikvision" in message
    assert (
        "its password is a well-known default" in message
        and "factory password (" not in message.split(",")[0]
    )
