"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

Lets an analyst pivot between camwatch, Zeek and Suricata records of the same flow.
"""

from __future__ import annotations

import base64
import hashlib
import struct

_PORTED = frozenset({6, 17, 132})
_ICMP4 = 1
_ICMP6 = 58
# ICMP request/response pairs map to a port pair so both directions hash alike.
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    144: 145,
    145: 144,
}


def community_id(
    src_ip: bytes,
    dst_ip: bytes,
    proto: int,
    src_port: int = 0,
    dst_port: int = 0,
    *,
    icmp_type: int = -1,
    icmp_code: int = -1,
    seed: int = 0,
) -> str:
    """Community ID v1 of a flow; addresses as packed bytes (4 or 16), ports as ints.

    For ICMP/ICMPv6 pass `icmp_type` and `icmp_code` (of the flow's first packet).
    """
    one_way = False
    has_ports = proto in _PORTED
    if proto in (_ICMP4, _ICMP6) and icmp_type >= 0:
        pairs = _ICMP4_PAIRS if proto == _ICMP4 else _ICMP6_PAIRS
        has_ports = True
        if icmp_type in pairs:
            src_port, dst_port = icmp_type, pairs[icmp_type]
        else:
            src_port, dst_port, one_way = icmp_type, max(icmp_code, 0), True
    if not one_way and (src_ip, src_port) > (dst_ip, dst_port):
        src_ip, dst_ip, src_port, dst_port = dst_ip, src_ip, dst_port, src_port
    data = struct.pack("!H", seed) + src_ip + dst_ip + struct.pack("!BB", proto, 0)
    if has_ports:
        data += struct.pack("!HH", src_port, dst_port)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
