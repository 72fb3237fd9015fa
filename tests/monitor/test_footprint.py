"""What a live flow and a device keep: at the default bounds (200,000 flows, 50,000 devices) every byte per
entry is tens of megabytes (docs/design.md §6, "Memory budget"). These hold the representations that keep
them small; the records and alerts are those of the other tests."""

from __future__ import annotations

from typing import cast

from lab.floods import as_batches, tcp_frame, udp_frame
from monitor import analysis as analysis_module
from monitor import protocol
from monitor.analysis import DUPLICATE_WINDOW_NS, Analysis
from monitor.devices import MAX_PEERS, Inventory
from monitor.engine import Engine
from monitor.events import AppRequest
from monitor.policy import SitePolicy
from monitor.protocol import FlowApp
from monitor.reassembly import OrderStats, TcpOrder
from tests.enginerun import vendors

FEW_PEERS = 8  # monitor.devices.FEW_PEERS: the peers a device keeps in a tuple
CAM_MAC, GW_MAC = 0x4419B6000001, 0x020000000002
CAM, PEER = 0x0A140040, 0xC0A80105
LAPTOP_MAC, PRINTER_MAC = 0x020000000077, 0x020000000078
# Hikvision's devices are watched; the laptop and the printer are not (their flows keep no evidence).
POLICY = "site: s\nmonitored: {vendors: [hikvision]}\n"


def test_a_flow_without_analyzer_state_shares_one_empty_mapping() -> None:
    engine = Engine(SitePolicy.from_yaml(POLICY), vendors())
    frames = [
        (1_000 + i, udp_frame(LAPTOP_MAC, PRINTER_MAC, PEER, CAM, 40000 + i, 9999, b"?" * 20))
        for i in range(3)
    ]
    for batch in as_batches(frames):
        engine.feed(batch)
    flows = engine.flows.flows()
    assert len(flows) == 3
    for flow in flows:
        assert flow.app is not None and not isinstance(flow.app.states, dict)  # not an empty dict each
        assert flow.app.states is protocol.NO_STATES
    # A state written makes it the flow's own; a flow that ends keeps only its evidence ring (here none).
    app = flows[0].app
    assert app is not None
    app.own_states()["x"] = 1
    assert type(app.states) is dict and protocol.NO_STATES == {}
    engine.analysis.on_flow_end(flows[0])
    assert app.states is protocol.NO_STATES


def test_recent_datagrams_are_one_flat_tuple_and_forget_the_first_seen() -> None:
    analysis, app = Analysis(), FlowApp()
    t = 0
    recent = 8  # analysis_module.RECENT_DATAGRAMS, the number the dict this replaced kept

    def repeated(payload: bytes, from_src: bool = True) -> bool:
        nonlocal t
        t += 1_000
        return analysis._repeated(app, from_src, payload, t)

    assert not repeated(b"a")
    assert type(app.datagrams) is tuple and len(app.datagrams) == 2  # not a dict per flow
    assert recent == analysis_module.RECENT_DATAGRAMS
    assert repeated(b"a") and not repeated(b"a", from_src=False)  # a copy; the other side's is not
    for i in range(recent - 2):
        assert not repeated(bytes([i]) * 3)
    assert app.datagrams is not None and len(app.datagrams) == 2 * recent
    assert repeated(b"a")  # seen again: it keeps its place, the first seen
    assert not repeated(b"new")  # one too many: the first seen is forgotten...
    assert not repeated(b"a")  # ...so this is a new datagram (and the second seen goes)
    assert not repeated(b"a", from_src=False)  # forgotten in turn
    t += DUPLICATE_WINDOW_NS
    assert not repeated(b"new")  # too long ago to be a mirror's copy


def test_a_tcp_direction_holds_no_list_until_a_hole() -> None:
    order, stats = TcpOrder(), OrderStats()
    assert order.feed(100, True, b"", 0, stats) == []
    assert order.feed(101, False, b"abc", 1, stats) == [(b"abc", 1)]
    assert order._held is None
    assert order.feed(110, False, b"later", 2, stats) == []  # after a hole: held
    assert order._held is not None and order.waiting
    order.drop(stats)
    assert order._held is None and not order.waiting and stats.held_bytes == 0


def test_an_engine_flow_in_order_holds_no_segment_list() -> None:
    engine = Engine(SitePolicy.default(), vendors())
    c2s = (GW_MAC, CAM_MAC, PEER, CAM, 40000, 80)
    s2c = (CAM_MAC, GW_MAC, CAM, PEER, 80, 40000)
    frames = [
        (1_000, tcp_frame(*c2s, 0x02, 1, 0, b"")),
        (2_000, tcp_frame(*s2c, 0x12, 500, 2, b"")),
        (3_000, tcp_frame(*c2s, 0x18, 2, 501, b"GET / HTTP/1.1\r\n\r\n")),
    ]
    for batch in as_batches(frames):
        engine.feed(batch)
    (flow,) = engine.flows.flows()
    app = flow.app
    assert app is not None and app.tcp_src is not None and app.tcp_dst is not None
    assert app.tcp_src._held is None and app.tcp_dst._held is None


def test_flows_of_one_host_share_its_address_port_and_mac_objects() -> None:
    engine = Engine(SitePolicy.from_yaml(POLICY), vendors())
    frames = [
        (1_000 + i, udp_frame(LAPTOP_MAC, PRINTER_MAC, PEER, CAM, 40000 + i, 9999, b"?")) for i in range(2)
    ]
    frames.append((5_000, udp_frame(LAPTOP_MAC, PRINTER_MAC, PEER, CAM, 40002, 9999, b"?")))  # another batch
    for batch in as_batches(frames, size=2):
        engine.feed(batch)
    first, *others = engine.flows.flows()
    assert len(others) == 2
    for flow in others:
        assert flow.src[0] == first.src[0] and flow.src[0] is first.src[0]
        assert flow.dst[0] is first.dst[0] and flow.dst[1] is first.dst[1]  # the camera's address and port
        assert flow.src_mac is first.src_mac and flow.dst_mac is first.dst_mac
        assert all(mine is theirs for mine, theirs in zip(flow.key[3:5], first.key[3:5], strict=True))


def test_a_device_keeps_few_peers_in_a_tuple_and_no_empty_set() -> None:
    inventory = Inventory(vendors())
    dev, _ = inventory.observe(CAM_MAC, 1)
    assert not isinstance(dev.protocols, set) and not isinstance(dev.peers, set)  # no empty set each
    dev.add_protocol("rtsp")
    dev.add_protocol("rtsp")
    assert dev.protocols == {"rtsp"}
    peers = [f"192.0.2.{i}" for i in range(FEW_PEERS + 1)]
    for ip in peers[:FEW_PEERS] * 2:
        dev.add_peer(ip)
    assert dev.peers == tuple(peers[:FEW_PEERS])
    dev.add_peer(peers[-1])
    assert dev.peers == set(peers)
    for i in range(2 * MAX_PEERS):
        dev.add_peer(f"198.51.{i // 256}.{i % 256}")
    assert len(dev.peers) == MAX_PEERS
    # What a restart keeps and loads is the same.
    again = Inventory(vendors())
    assert again.restore(inventory.state()) == 1 and again.state() == inventory.state()


def test_devices_of_one_vendor_share_their_oui_evidence() -> None:
    inventory = Inventory(vendors())
    first, _ = inventory.observe(CAM_MAC, 1)
    second, _ = inventory.observe(CAM_MAC + 1, 2)
    assert first.evidence == second.evidence and first.evidence[0].kind == "oui"
    assert first.evidence[0] is second.evidence[0]


def test_rtsp_requests_and_early_answers_wait_in_lists_bounded_as_before() -> None:
    from monitor.analyzers import rtsp, rtsp_tunnel

    requests, session = rtsp.Requests(), rtsp_tunnel.Session()
    # Not a deque(maxlen=16): 624 bytes before its first item, one per RTSP connection and tunnelled session.
    assert type(requests.pending) is list and type(session.pending) is list and type(session.early) is list
    asked = [cast(AppRequest, object()) for _ in range(rtsp.MAX_PENDING + 2)]
    for request in asked:
        requests.wait(request)
    assert requests.pending == asked[2:]  # the oldest forgotten, as the deque did
    early = [cast(rtsp.Answer, object()) for _ in range(rtsp_tunnel.MAX_EARLY + 1)]
    assert all(session.hold(answer) for answer in early)
    assert session.early == early[1:]


def test_dvrip_logins_and_xiongmai_requests_wait_in_bounded_lists() -> None:
    # One per watched tcp/37777 connection and per Xiongmai debug-port connection: no empty deque (624 bytes).
    from lab import attacks
    from monitor.analyzers import dvrip, xmdebug
    from tests.monitor.analyzers.recording import make_flow, run

    assert type(dvrip._Logins().pending) is list and type(xmdebug._Exchange().pending) is list
    login = attacks.dhip_login(attacks.rpc_login_body("admin", client_type="NetKeyboard", password="x"))
    flow = make_flow("198.51.100.9", 40000, "10.0.0.65", 37777)
    run(dvrip.handle_dvrip, flow, [(True, login)] * (dvrip.MAX_PENDING + 4), "dvrip")
    logins = protocol.peek_state(flow, dvrip.PROTOCOL, dvrip._Logins)
    assert logins is not None and logins.seq == dvrip.MAX_PENDING + 4
    assert [r.seq for _, r in logins.pending] == list(range(4, dvrip.MAX_PENDING + 4))  # the oldest forgotten
    flow = make_flow("198.51.100.9", 40001, "10.0.0.65", 9530)
    run(
        xmdebug.handle_enabler,
        flow,
        [(True, b"OpenTelnet:OpenOnce")] * (xmdebug.MAX_PENDING + 2),
        "xm-telnetctl",
    )
    exchange = protocol.peek_state(flow, xmdebug.ENABLER, xmdebug._Exchange)
    assert exchange is not None and [r.seq for r in exchange.pending] == list(
        range(2, xmdebug.MAX_PENDING + 2)
    )
