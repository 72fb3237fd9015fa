"""The lab's gateway and cloud services, on loopback with real sockets (no root needed).

Each answer is checked with the engine's own analyzers, the same way camwatch reads the lab's traffic.
The live lab (namespaces, routing) is tested in test_lab.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import payloads
from lab.camera import http_exchange, resolve, udp_exchange
from lab.services import (
    HttpReply,
    HttpRequest,
    HttpService,
    IgdDevice,
    UdpService,
    dns_answer,
    easy4ip_answer,
    ezviz_register_reply,
    ezviz_stun_answer,
    ntp_answer,
    ssdp_answer,
)
from lab.topology import default_description
from monitor.analyzers import dns, ntp, ssdp
from monitor.analyzers.p2p import DahuaP2pMessage, EzvizXmlMessage

NAMES = default_description().services
LOCATION = "http://10.77.0.1:49152/rootDesc.xml"


def run(coro_factory: Callable[[], object]) -> object:
    return asyncio.run(coro_factory())  # type: ignore[arg-type]


# --- DNS --------------------------------------------------------------------------------------------------


def test_dns_known_name_gets_an_a_record_with_the_question_as_asked() -> None:
    query = payloads.dns_query(0x1234, "LiteDev.EzvizLife.com")
    answer = dns_answer(query, NAMES.lookup)
    assert answer is not None
    msg = dns.parse(answer)
    assert msg.is_response and msg.id == 0x1234 and msg.rcode == 0
    assert [(r.rtype, r.value) for r in msg.answers] == [(dns.TYPE_A, "203.0.113.20")]
    # The question is echoed byte for byte (resolvers that randomise case check it).
    assert b"\x07LiteDev\x09EzvizLife\x03com\x00" in answer
    assert msg.flags & 0x0100, "RD is copied from the query"


def test_dns_unknown_name_is_nxdomain_and_other_types_get_no_data() -> None:
    nx = dns.parse(dns_answer(payloads.dns_query(7, "example.org"), NAMES.lookup) or b"")
    assert nx.rcode == 3 and not nx.answers and nx.questions == (("example.org", 1, 1),)
    aaaa = dns.parse(dns_answer(payloads.dns_query(8, "www.easy4ipcloud.com", qtype=28), NAMES.lookup) or b"")
    assert aaaa.rcode == 0 and not aaaa.answers


def test_dns_garbage_gets_formerr_or_nothing_and_responses_are_never_answered() -> None:
    assert dns_answer(b"\x01\x02", NAMES.lookup) is None
    bad = dns_answer(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc", NAMES.lookup)
    assert bad is not None and struct.unpack("!HH", bad[:4]) == (
        0xABCD,
        0x8000 | 0x0400 | 0x0100 | 0x0080 | 1,
    )
    response = payloads.dns_answer(9, "litedev.ezvizlife.com", "203.0.113.20")
    assert dns_answer(response, NAMES.lookup) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_answers_never_raise_on_garbage(data: bytes) -> None:
    peer = ("10.77.0.11", 40000)
    dns_answer(data, NAMES.lookup)
    ssdp_answer(data, LOCATION, "uuid")
    ntp_answer(data, time.time())
    ezviz_stun_answer(data, peer)
    easy4ip_answer(data, peer, ("203.0.113.30", 8800))
    for prefix in (b"M-SEARCH * HTTP/1.1\r\n", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"):
        dns_answer(prefix + data, NAMES.lookup)
        ssdp_answer(prefix + data, LOCATION, "uuid")


def test_dns_service_survives_garbage_and_the_camera_resolver_reads_it() -> None:
    async def scenario() -> tuple[str | None, str | None]:
        async with UdpService("dns", "127.0.0.1", 0, lambda d, p: dns_answer(d, NAMES.lookup)) as svc:
            for junk in (b"", b"\x00", b"\xff" * 40, b"\x00\x01\x00\x00\x00\x05" + b"\x00" * 6):
                await udp_exchange(("127.0.0.1", svc.port), junk, timeout=0.2)
            known = await resolve("127.0.0.1", "www.easy4ipcloud.com", port=svc.port)
            unknown = await resolve("127.0.0.1", "nowhere.example", port=svc.port)
            return known, unknown

    assert run(scenario) == ("203.0.113.30", None)


# --- UPnP IGD -------------------------------------------------------------------------------------------


def test_ssdp_answers_an_igd_search_with_its_location() -> None:
    answer = ssdp_answer(payloads.igd_search(), LOCATION, "u-1")
    assert answer is not None
    msg = ssdp.parse(answer)
    assert msg.kind == "response" and msg.location == LOCATION and msg.is_igd_search
    assert msg.usn == f"uuid:u-1::{payloads.IGD_TYPE}"


def test_ssdp_ignores_other_searches_notifies_and_garbage() -> None:
    dial = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
    dial += b"ST: urn:dial-multiscreen-org:service:dial:1\r\n\r\n"
    notify = (
        b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"
    )
    for data in (dial, notify, b"M-SEARCH * HTTP/1.1\r\n\r\n", b"\x00garbage"):
        assert ssdp_answer(data, LOCATION, "u") is None


def soap_request(action: str, port: int) -> bytes:
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<u:{action} xmlns:u="{payloads.WANIP_TYPE}"></u:{action}></s:Body></s:Envelope>'
    )
    return (
        f"POST /ctl/IPConn HTTP/1.1\r\nHOST: 127.0.0.1:{port}\r\nCONTENT-TYPE: text/xml\r\n"
        f'SOAPACTION: "{payloads.WANIP_TYPE}#{action}"\r\nCONTENT-LENGTH: {len(body)}\r\n\r\n{body}'
    ).encode()


def test_igd_grants_add_port_mapping_over_http_and_survives_bad_requests() -> None:
    igd = IgdDevice(external_ip="203.0.113.1")

    async def scenario() -> list[bytes]:
        async with HttpService("igd", "127.0.0.1", 0, igd.handle) as svc:
            port = svc.port
            replies = [
                await http_exchange("127.0.0.1", port, b"GET /rootDesc.xml HTTP/1.1\r\nHost: x\r\n\r\n"),
                await http_exchange("127.0.0.1", port, b"BLAH\r\n\r\n"),
                await http_exchange(
                    "127.0.0.1", port, b"POST /ctl/IPConn HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
                ),
                await http_exchange(
                    "127.0.0.1", port, payloads.add_port_mapping("127.0.0.1", "10.77.0.11", port=port)
                ),
                await http_exchange("127.0.0.1", port, soap_request("ForceTermination", port)),
                await http_exchange("127.0.0.1", port, soap_request("GetExternalIPAddress", port)),
            ]
            return replies

    desc, garbage, too_long, mapped, unknown, external = run(scenario)  # type: ignore[misc]
    assert desc.startswith(b"HTTP/1.1 200") and b"<controlURL>/ctl/IPConn</controlURL>" in desc
    assert garbage.startswith(b"HTTP/1.1 400") and too_long.startswith(b"HTTP/1.1 400")
    assert mapped.startswith(b"HTTP/1.1 200") and b"AddPortMappingResponse" in mapped
    assert unknown.startswith(b"HTTP/1.1 500") and b"<errorCode>401</errorCode>" in unknown
    assert b"<NewExternalIPAddress>203.0.113.1</NewExternalIPAddress>" in external
    assert [(m.client, m.protocol, m.external_port, m.description) for m in igd.mappings] == [
        ("10.77.0.11", "TCP", 8000, "HIKVISION")
    ]


def test_http_request_parse_names_the_problem() -> None:
    with pytest.raises(ValueError, match="blank line"):
        HttpRequest.parse(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(ValueError, match="version"):
        HttpRequest.parse(b"GET / FTP/1.0\r\n\r\n")
    assert HttpReply(404, "Not Found").encode().startswith(b"HTTP/1.1 404 Not Found\r\n")


# --- NTP ------------------------------------------------------------------------------------------------


def test_ntp_answers_a_client_as_a_stratum_2_server() -> None:
    request = bytes([0x23]) + bytes(39) + bytes.fromhex("e9b2c3d400112233")
    now = 1_764_000_000.25
    answer = ntp_answer(request, now)
    assert answer is not None and len(answer) == 48
    msg = ntp.parse(answer)
    assert (msg.mode_name, msg.stratum, msg.version) == ("server", 2, 4)
    assert answer[24:32] == request[40:48], "originate timestamp is the client's transmit timestamp"
    assert msg.transmit_time == pytest.approx(now, abs=1e-6)
    assert ntp_answer(answer, now) is None, "a server packet is not answered"


# --- clouds ---------------------------------------------------------------------------------------------


def test_ezviz_xml_stun_reflects_the_source_address() -> None:
    query = payloads.ezviz_nat_query("Q77000011", "10.77.0.11", 40112)
    answer = ezviz_stun_answer(query, ("10.77.0.11", 40112))
    assert answer is not None
    msg = EzvizXmlMessage.parse(answer)
    assert msg.root == "Response" and msg.serial == "Q77000011"
    assert ("NatIP", "10.77.0.11") in msg.elements and ("NatPort", "40112") in msg.elements
    assert ezviz_stun_answer(answer, ("203.0.113.20", 6002)) is None, "a response is not answered"


def test_easy4ip_answers_dhget_with_the_cseq() -> None:
    answer = easy4ip_answer(payloads.dhget("/probe/p2psrv", 5), ("10.77.0.12", 41000), ("203.0.113.30", 8800))
    assert answer is not None
    msg = DahuaP2pMessage.parse(answer)
    assert msg.status == 200 and ("cseq", "5") in msg.headers
    assert easy4ip_answer(answer, ("203.0.113.30", 8800), ("203.0.113.30", 8800)) is None


def test_ezviz_registration_over_tcp() -> None:
    async def scenario() -> bytes:
        handler = lambda r: ezviz_register_reply(r, "127.0.0.1", 6002)  # noqa: E731
        async with HttpService("ezviz", "127.0.0.1", 0, handler) as svc:
            return await http_exchange(
                "127.0.0.1", svc.port, payloads.ezviz_register("litedev.ezvizlife.com", "Q1")
            )

    reply = run(scenario)
    assert isinstance(reply, bytes) and reply.startswith(b"HTTP/1.1 200 OK")
    body = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert body["stun"] == {"address": "127.0.0.1", "port": 6002}


def test_udp_service_keeps_serving_when_its_handler_fails() -> None:
    calls: list[bytes] = []

    def handler(data: bytes, peer: tuple[str, int]) -> bytes | None:
        calls.append(data)
        if data == b"boom":
            raise RuntimeError("handler bug")
        return b"pong"

    async def scenario() -> bytes | None:
        async with UdpService("echo", "127.0.0.1", 0, handler) as svc:
            await udp_exchange(("127.0.0.1", svc.port), b"boom", timeout=0.2)
            return await udp_exchange(("127.0.0.1", svc.port), b"ping", timeout=2.0)

    assert run(scenario) == b"pong"
    assert calls == [b"boom", b"ping"]


def test_services_refuse_a_busy_port_with_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def scenario() -> None:
            async with HttpService("igd", "127.0.0.1", port, IgdDevice("203.0.113.1").handle):
                pass

        with pytest.raises(OSError, match=f"igd: cannot listen on tcp 127.0.0.1:{port}"):
            run(scenario)
