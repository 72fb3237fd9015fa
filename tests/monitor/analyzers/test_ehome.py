"""Hikvision EHome/ISUP: the registration request and the platform's answer, read by their flat elements."""

from __future__ import annotations

import pytest

from lab import payloads
from monitor.analyzers import AnalyzerError, ehome


def test_a_registration_names_the_device_and_its_firmware() -> None:
    data = payloads.ehome_register("DS-2CD2143G0-I20190101AAWR123456789", "V5.5.0 build 170725", "10.20.0.11")
    msg = ehome.parse(data)
    assert msg.request and msg.command == "REGISTER" and msg.version == "2.0"
    assert (msg.device_id, msg.firmware, msg.local_ip, msg.device_type) == (
        "DS-2CD2143G0-I20190101AAWR123456789",
        "V5.5.0 build 170725",
        "10.20.0.11",
        "31",
    )


def test_the_answer_is_read_by_its_which_command_and_status() -> None:
    msg = ehome.parse(payloads.ehome_register_ok())
    assert not msg.request and msg.command == "REGISTER" and msg.status == 200 and msg.device_id is None


def test_a_binary_prefix_and_gb2312_text_are_read_through() -> None:
    data = b"\x00\x10\x20\x30" + payloads.ehome_register("abc", "V5", "10.20.0.11").replace(
        b"abc", b"\xc9\xe3\xcf\xf1"
    )
    msg = ehome.parse(data)
    assert msg.device_id == "\xc9\xe3\xcf\xf1" and msg.firmware == "V5"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<Probe><Types>inquiry</Types></Probe>", "no <PPVSPMessage>"),
        (b"<PPVSPMessage><Command>REGISTER</Command></PPVSPMessage>", "CommandType 'missing'"),
        (b"<PPVSPMessage><CommandType>SHOUT</CommandType></PPVSPMessage>", "CommandType 'SHOUT'"),
        (b"x" * 1100 + b"<PPVSPMessage>", "no <PPVSPMessage> in the first 1024 bytes"),
    ],
)
def test_what_is_not_ehome_is_a_precise_error(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        ehome.parse(data)


def test_looks_like() -> None:
    assert ehome.looks_like(payloads.ehome_register("x", "V5", "10.20.0.11"))
    assert not ehome.looks_like(b"<?xml version='1.0'?><Probe/>") and not ehome.looks_like(b"")


@pytest.mark.parametrize(
    "change",
    [
        (b"<PPVSPMessage>", b"<ppvspmessage>"),  # the root in lower case
        (b"</PPVSPMessage>", b"</ppvspmessage>"),
        (b"<Command>", b'<Command type="sig">'),  # an attribute
        (b"<?xml", b"<!--" + b" " * 300 + b"-->\r\n<?xml"),  # a prolog longer than 256 bytes
        (b"><", b">\r\n  <"),  # pretty-printed
    ],
    ids=["lower-case root", "lower-case end", "attribute", "long prolog", "pretty-printed"],
)
def test_register_variants_devices_send(change: tuple[bytes, bytes]) -> None:
    data = payloads.ehome_register("cam1", "V5", "10.20.0.11").replace(*change)
    msg = ehome.parse(data)
    assert ehome.looks_like(data) and (msg.command, msg.device_id, msg.firmware) == ("REGISTER", "cam1", "V5")
