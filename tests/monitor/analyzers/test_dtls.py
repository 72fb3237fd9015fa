"""DTLS analyzer: real OpenSSL handshakes, our own aiortc capture, hand-built edge cases, malformed input.

Real parts: the handshakes are made by OpenSSL (through pyOpenSSL, which aiortc uses for its DTLS) between
two in-memory endpoints, with a cookie exchange and DTLS-SRTP; the datagrams are cut as aiortc cuts them
(1500 bytes per read of the memory BIO). ``tests/data/fixtures/webrtc/liveview.pcap`` is an aiortc session
captured in the lab (see the README there).
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from monitor.analyzers import AnalyzerError, dtls, tls
from tests.monitor.analyzers.payloads import udp_payloads

CAPTURE = Path(__file__).parents[2] / "data" / "fixtures" / "webrtc" / "liveview.pcap"
COOKIE = b"camwatch-cookie-0123456789"


# --- real handshakes ------------------------------------------------------------------------------------


@cache
def certificate(org: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, "10.20.0.11"),
        ]
    )
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def context(profiles: bytes, *, server: bool, cookie: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_tlsext_use_srtp(profiles)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    if server:
        cert, key = certificate("HIKVISION")
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        if cookie:
            ctx.set_options(SSL.OP_COOKIE_EXCHANGE)
            ctx.set_cookie_generate_callback(lambda conn: COOKIE)
            ctx.set_cookie_verify_callback(lambda conn, value: value == COOKIE)
    return ctx


def handshake(client_profiles: bytes, server_profiles: bytes, *, cookie: bool) -> list[tuple[str, bytes]]:
    """The datagrams of a DTLS 1.2 handshake between two OpenSSL endpoints, as ("c"|"s", payload)."""
    client = SSL.Connection(context(client_profiles, server=False, cookie=cookie), None)
    client.set_connect_state()
    server = SSL.Connection(context(server_profiles, server=True, cookie=cookie), None)
    server.set_accept_state()
    out: list[tuple[str, bytes]] = []
    finished = [False, False]
    for _ in range(10):
        for i, (conn, peer, who) in enumerate(((client, server, "c"), (server, client, "s"))):
            with contextlib.suppress(SSL.WantReadError):
                conn.do_handshake()
                finished[i] = True
            while True:
                try:
                    datagram = conn.bio_read(1500)
                except SSL.WantReadError:
                    break
                out.append((who, datagram))
                peer.bio_write(datagram)
        if all(finished):
            return out
    raise AssertionError("OpenSSL handshake did not finish")


def test_openssl_handshake_with_cookie_exchange_and_srtp() -> None:
    offer, preference = (
        b"SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM",
        b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80",
    )
    flight = handshake(offer, preference, cookie=True)
    parsed = [(who, dtls.parse(d)) for who, d in flight]
    assert all(dtls.looks_like(d) for _, d in flight)
    (first, retry) = [p.client_hello for who, p in parsed if who == "c" and p.client_hello is not None]
    assert first.cookie_length == 0 and retry.cookie_length == len(COOKIE)
    assert first.version == dtls.DTLS_1_2
    assert first.srtp_profiles == (0x0001, 0x0007) and first.srtp_mki_length == 0
    assert first.srtp_profile_names == ("SRTP_AES128_CM_HMAC_SHA1_80", "SRTP_AEAD_AES_128_GCM")
    assert dtls.EXT_USE_SRTP in first.extensions and first.cipher_suites
    hvr = next(m for _, p in parsed for m in p.messages if isinstance(m, dtls.HelloVerifyRequest))
    assert hvr.cookie_length == len(COOKIE)
    server_hello = next(p.server_hello for _, p in parsed if p.server_hello is not None)
    # RFC 5764 4.1.1: the server picks one of the client's profiles.
    assert server_hello.srtp_profile == 0x0007
    assert server_hello.srtp_profile_name == "SRTP_AEAD_AES_128_GCM"
    assert server_hello.version == dtls.DTLS_1_2
    cert = next(p.certificate for _, p in parsed if p.certificate is not None)
    assert cert.subject.organization == "HIKVISION" and cert.subject.common_name == "10.20.0.11"
    assert cert.self_signed and cert.serial == "1234"
    # After ChangeCipherSpec the Finished messages are epoch 1: counted, never parsed.
    encrypted = [r for _, p in parsed for r in p.records if r.encrypted]
    assert encrypted and all(r.content_type == dtls.CT_HANDSHAKE and r.epoch == 1 for r in encrypted)
    sequences = [r.sequence for who, p in parsed if who == "s" for r in p.records if r.epoch == 0]
    assert sequences == sorted(sequences)


def test_openssl_handshake_without_srtp_and_cookie() -> None:
    flight = handshake(b"SRTP_AES128_CM_SHA1_32", b"SRTP_AES128_CM_SHA1_32", cookie=False)
    hello = dtls.parse(flight[0][1]).client_hello
    assert hello is not None and hello.cookie_length == 0 and hello.srtp_profiles == (0x0002,)
    assert not any(isinstance(m, dtls.HelloVerifyRequest) for _, d in flight for m in dtls.parse(d).messages)
    server_hello = next(dtls.parse(d).server_hello for _, d in flight if dtls.parse(d).server_hello)
    assert server_hello is not None and server_hello.srtp_profile == 0x0002


# --- our own aiortc capture -----------------------------------------------------------------------------


def test_golden_aiortc_live_view() -> None:
    payloads = [p for p in udp_payloads(CAPTURE) if 20 <= p.payload[0] <= 63]
    parsed = [dtls.parse(p.payload) for p in payloads]
    assert all(dtls.looks_like(p.payload) for p in payloads)
    # The cloud (the answerer, DTLS client in aiortc) offers AES-256-GCM, AES-128-GCM, AES128_CM_80.
    hellos = [m for d in parsed for m in d.messages if isinstance(m, dtls.ClientHello)]
    assert [h.srtp_profiles for h in hellos] == [(0x0008, 0x0007, 0x0001)]
    assert hellos[0].version == dtls.DTLS_1_2 and parsed[0].records[0].version == dtls.DTLS_1_0
    (server_hello,) = [m for d in parsed for m in d.messages if isinstance(m, dtls.ServerHello)]
    assert server_hello.srtp_profile == 0x0008
    # Both peers' certificates, each split by OpenSSL over records of one datagram and joined here:
    # aiortc's self-signed certificates have a random 32-hex-digit CN.
    certs = [m for d in parsed for m in d.messages if isinstance(m, tls.CertificateInfo)]
    assert len(certs) == 2
    for cert in certs:
        cn = cert.subject.common_name
        assert cert.self_signed and cn is not None and len(cn) == 32 and int(cn, 16) >= 0
    # The last datagram is the camera's close_notify, encrypted in epoch 1.
    last = parsed[-1].records
    assert [(r.content_name, r.epoch) for r in last] == [("alert", 1)]


# --- hand-built records ---------------------------------------------------------------------------------


def record(content_type: int, body: bytes, *, version: int = 0xFEFD, epoch: int = 0, seq: int = 0) -> bytes:
    return (
        struct.pack("!BHH", content_type, version, epoch)
        + seq.to_bytes(6, "big")
        + struct.pack("!H", len(body))
        + body
    )


def handshake_message(
    msg_type: int, body: bytes, *, seq: int = 0, offset: int = 0, total: int | None = None
) -> bytes:
    total = len(body) if total is None else total
    return (
        bytes([msg_type]) + total.to_bytes(3, "big") + struct.pack("!H", seq)
        + offset.to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    )  # fmt: skip


def ext(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value


def use_srtp(*profiles: int, mki: bytes = b"") -> bytes:
    ids = b"".join(struct.pack("!H", p) for p in profiles)
    return ext(14, struct.pack("!H", len(ids)) + ids + bytes([len(mki)]) + mki)


def client_hello(*extensions: bytes, version: int = 0xFEFD, cookie: bytes = b"") -> bytes:
    exts = b"".join(extensions)
    return (
        struct.pack("!H", version) + bytes(32) + b"\x00" + bytes([len(cookie)]) + cookie
        + b"\x00\x04\xc0\x2b\xc0\x2f" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    )  # fmt: skip


def server_hello(*extensions: bytes, version: int = 0xFEFD) -> bytes:
    exts = b"".join(extensions)
    return (
        struct.pack("!H", version)
        + bytes(32)
        + b"\x00"
        + b"\xc0\x2b\x00"
        + struct.pack("!H", len(exts))
        + exts
    )


def test_client_hello_fields() -> None:
    body = client_hello(
        use_srtp(1, 2, 0x0A0A, mki=b"\x01\x02"), ext(43, b"\x04\xfe\xfc\xfe\xfd"), cookie=b"abc"
    )
    d = dtls.parse(record(22, handshake_message(1, body)))
    hello = d.client_hello
    assert hello is not None and d.handshake
    assert hello.srtp_profiles == (1, 2, 0x0A0A) and hello.srtp_mki_length == 2
    assert hello.srtp_profile_names[-1] == "0x0a0a"
    assert hello.versions == (dtls.DTLS_1_3, dtls.DTLS_1_2)
    assert hello.cookie_length == 3 and hello.cipher_suites == (0xC02B, 0xC02F)
    assert hello.extensions == (14, 43)
    assert dtls.version_name(hello.versions[0]) == "DTLS 1.3"


def test_server_hello_dtls13_selected_version() -> None:
    d = dtls.parse(record(22, handshake_message(2, server_hello(ext(43, b"\xfe\xfc")))))
    assert d.server_hello is not None
    assert d.server_hello.version == dtls.DTLS_1_3 and d.server_hello.legacy_version == dtls.DTLS_1_2
    assert d.server_hello.srtp_profile is None and d.server_hello.srtp_profile_name is None


def test_several_records_alert_and_fragments() -> None:
    body = client_hello(use_srtp(7))
    half = len(body) // 2
    datagram = (
        record(22, handshake_message(1, body[:half], total=len(body)), version=0xFEFF)
        + record(22, handshake_message(1, body[half:], offset=half, total=len(body)), seq=1)
        + record(21, b"\x01\x00", seq=2)
        + record(20, b"\x01", seq=3)
        + record(23, b"ciphertext", epoch=1, seq=0)
    )
    assert dtls.looks_like(datagram)
    d = dtls.parse(datagram)
    assert [r.content_name for r in d.records] == [
        "handshake", "handshake", "alert", "change_cipher_spec", "application_data"
    ]  # fmt: skip
    assert [f.complete for f in d.fragments] == [False, False]
    # The two fragments in one datagram are joined into the whole ClientHello.
    assert d.client_hello is not None and d.client_hello.srtp_profiles == (7,)
    assert dtls.DtlsAlert(1, 0) in d.messages
    assert d.records[-1].encrypted and not d.records[0].encrypted


def test_fragment_whose_rest_is_elsewhere_is_not_parsed() -> None:
    body = client_hello()
    d = dtls.parse(record(22, handshake_message(1, body[:20], total=len(body))))
    assert d.client_hello is None and d.fragments[0].fragment_length == 20


def test_unified_header_records() -> None:
    # 001 C=0 S=1 L=1 EE=3: 16-bit sequence, a length, epoch bits 3.
    with_length = bytes([0x2F]) + b"\x12\x34" + struct.pack("!H", 5) + b"hello"
    # S=0 L=0: 8-bit sequence, the record fills the rest of the datagram.
    filling = bytes([0x21, 0x07]) + b"rest of datagram"
    d = dtls.parse(with_length + filling)
    first, second = d.records
    assert first.unified and first.encrypted and first.epoch == 3 and first.sequence == 0x1234
    assert first.fragment == b"hello"
    assert second.epoch == 1 and second.sequence == 7 and second.fragment == b"rest of datagram"


MALFORMED = [
    (b"", "empty datagram"),
    (b"\x16\xfe\xfd" + bytes(5), "truncated"),
    (record(22, b"")[:-2] + b"\x00\x10", "runs past"),
    (record(22, b"x", version=0x0303), "record version 0x0303"),
    (record(19, b"x"), "content type 19"),
    (record(25, b"x"), "tls12_cid"),
    (bytes([0x30, 0, 0]), "connection id"),
    (bytes([0x2C, 0, 0, 0, 0x50]), "encrypted record needs 80 bytes"),
    (record(22, b"\x00\x00\x01\xff\xff\xff\xff\xff\xff"), "fragment_length needs"),
    (record(22, handshake_message(1, b"ab", offset=5, total=4)), "beyond the message length"),
    (record(22, handshake_message(1, client_hello(version=0x0303))), "0x0303 is not a DTLS version"),
    (record(22, handshake_message(1, client_hello(use_srtp(1), use_srtp(2)))), "extension 14 appears twice"),
    (
        record(22, handshake_message(1, client_hello(ext(14, b"\x00\x03\x00\x01\x00\x00")))),
        "use_srtp profile list",
    ),
    (
        record(22, handshake_message(1, client_hello(ext(14, b"\x00\x02\x00\x01\x00\x00")))),
        "bytes after use_srtp",
    ),
    (record(22, handshake_message(2, server_hello(use_srtp(1, 7)))), "must choose one"),
    (record(22, handshake_message(1, client_hello()[:40])), "ClientHello"),
    (record(22, handshake_message(1, client_hello() + b"\x00")), "after the extensions"),
    (record(22, handshake_message(3, b"\xfe\xff\x02ab!")), "after the cookie"),
    (record(22, handshake_message(11, b"\x00\x00\x03\x00\x00\x00")), "Certificate"),
    (record(21, b"\x02"), "clear alert of 1 bytes"),
    (record(20, b"\x02"), "change_cipher_spec"),
    (record(22, b"x") * 65, "more than 64 records"),
    (
        record(22, handshake_message(1, b"ab", total=4) + handshake_message(2, b"cd", offset=2, total=4)),
        "fragments disagree",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason) as info:
        dtls.parse(raw)
    assert info.value.protocol == "dtls"


def test_looks_like_rejects_other_protocols() -> None:
    stun_binding = bytes.fromhex("000100002112a442") + bytes(12)
    tls_hello = bytes.fromhex("160303002f010000") + bytes(43)
    rtp = bytes.fromhex("8060000100000064deadbeef") + bytes(160)
    quic = bytes.fromhex("c3000000010800112233445566778800") + bytes(100)
    app_data_epoch0 = record(23, b"data")
    trailing = record(22, b"abc") + b"\x00"
    for payload in (stun_binding, tls_hello, rtp, quic, app_data_epoch0, trailing, b"", b"\x16\xfe\xfd"):
        assert not dtls.looks_like(payload)


# --- property tests: only AnalyzerError escapes; looks_like never raises ----------------------------------

SAMPLES = [
    record(22, handshake_message(1, client_hello(use_srtp(1, 7), ext(43, b"\x02\xfe\xfd")))),
    record(22, handshake_message(2, server_hello(use_srtp(7)))) + record(20, b"\x01", seq=1),
    record(22, handshake_message(3, b"\xfe\xff\x02ab")),
    record(21, b"\x02\x28") + bytes([0x2E, 0, 1, 0, 3]) + b"abc",
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    dtls.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        dtls.parse(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 300), st.integers(0, 255), st.integers(0, 300))
def test_truncated_and_mutated(sample: bytes, cut: int, value: int, where: int) -> None:
    for data in (
        sample[:cut],
        sample[: where % len(sample)] + bytes([value]) + sample[where % len(sample) + 1 :],
    ):
        dtls.looks_like(data)
        with contextlib.suppress(AnalyzerError):
            dtls.parse(data)
