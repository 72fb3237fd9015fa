"""WS-Discovery (SOAP over UDP 3702) as ONVIF cameras use it: Probe, ProbeMatches, Hello, Bye, Resolve...

Both the 2005/04 draft namespace (ONVIF's) and WS-DD 1.1 (2009/01) appear on the wire, and prefixes
vary by vendor, so elements are matched by local name. The action is the last path segment of
`wsa:Action`, or the local name of the first Body element when there is no Action header.

ONVIF scopes (ONVIF Core Specification, "Discovery" section: `onvif://www.onvif.org/<key>/<value>`)
carry the device's self-description: `name/` (a free text name, often the brand, e.g. "Dahua" or
"HIKVISION DS-2CD2143G2-I"), `hardware/` (the model), `location/...`, `type/...`, `Profile/...`; some
vendors add `MAC/`, `manufacturer/`, `firmware/` or `serial/`. Values are percent-decoded. The brand is
only reported as `manufacturer` when a scope names it explicitly; reading it out of `name` is left to
attribution, which knows the vendors.

`parse_xml` is the hardened XML entry point shared by the XML analyzers (SADP, UPnP SOAP): UTF-8 only,
no DOCTYPE or entity declarations (no entity expansion, no external entities), a size cap and a depth cap.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from monitor.analyzers import AnalyzerError
from monitor.protocol import Context, ProtocolSpec
from monitor.vendors.fingerprints import MAKER_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "wsd"

MAX_XML_BYTES = 64 * 1024
MAX_XML_DEPTH = 64
ONVIF_SCOPE_PREFIX = "onvif://www.onvif.org/"

ACTIONS = frozenset({"Probe", "ProbeMatches", "Hello", "Bye", "Resolve", "ResolveMatches"})
_MATCH_CONTAINERS = {"ProbeMatches": "ProbeMatch", "ResolveMatches": "ResolveMatch"}
_MANUFACTURER_KEYS = ("manufacturer", "mfr", "vendor", "brand")


def local_name(tag: str) -> str:
    """`{namespace}name` -> `name`."""
    return tag.rpartition("}")[2]


def parse_xml(
    data: bytes, protocol: str, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_XML_DEPTH
) -> ET.Element:
    """Parse an XML document defensively; raises AnalyzerError(protocol, ...) on anything unexpected."""
    if len(data) > max_bytes:
        raise AnalyzerError(protocol, f"XML of {len(data)} bytes exceeds {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnalyzerError(protocol, f"XML is not UTF-8 ({exc.reason} at {exc.start})") from None
    # Some stacks NUL-terminate the datagram; expat would call that junk after the document.
    text = text.removeprefix("\ufeff").rstrip("\x00 \t\r\n")
    upper = text.upper()
    # Entity expansion (billion laughs) and external entities both need a DOCTYPE; refuse it outright.
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise AnalyzerError(protocol, "XML with a DOCTYPE or ENTITY declaration")
    # A str is handed to expat as UTF-8 whatever the declaration says, so no other decoder runs.
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise AnalyzerError(protocol, f"malformed XML: {exc}") from None
    # The tree is small (size cap) but a deep one is no honest discovery message; walk it without recursion.
    stack = [(root, 1)]
    while stack:
        elem, depth = stack.pop()
        if depth > max_depth:
            raise AnalyzerError(protocol, f"XML nested deeper than {max_depth}")
        stack.extend((c, depth + 1) for c in elem)
    return root


def child(elem: ET.Element, name: str) -> ET.Element | None:
    """First direct child with local name `name`."""
    for c in elem:
        if local_name(c.tag) == name:
            return c
    return None


def child_text(elem: ET.Element, name: str) -> str | None:
    """Stripped text of the first direct child named `name` (None when absent)."""
    c = child(elem, name)
    if c is None:
        return None
    return (c.text or "").strip()


def _words(elem: ET.Element, name: str) -> tuple[str, ...]:
    text = child_text(elem, name)
    return tuple(text.split()) if text else ()


@dataclass(frozen=True, slots=True)
class WsdItem:
    """The endpoint part of a message: a Hello/Bye/ProbeMatch/ResolveMatch, or a Probe's criteria."""

    address: str | None  # wsa:EndpointReference/wsa:Address, e.g. "urn:uuid:..."
    types: tuple[str, ...]  # QNames as written, e.g. "dn:NetworkVideoTransmitter"
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]
    metadata_version: int | None

    def scope_values(self, key: str) -> tuple[str, ...]:
        """Decoded values of the ONVIF scopes `onvif://www.onvif.org/<key>/...` (key case-insensitive)."""
        out: list[str] = []
        want = key.lower()
        for scope in self.scopes:
            if scope[: len(ONVIF_SCOPE_PREFIX)].lower() != ONVIF_SCOPE_PREFIX:
                continue
            k, _, value = scope[len(ONVIF_SCOPE_PREFIX) :].partition("/")
            if k.lower() == want and value:
                out.append(unquote(value))
        return tuple(out)

    def _first(self, *keys: str) -> str | None:
        for key in keys:
            values = self.scope_values(key)
            if values:
                return values[0]
        return None

    @property
    def name(self) -> str | None:
        """ONVIF `name/` scope."""
        return self._first("name")

    @property
    def hardware(self) -> str | None:
        """ONVIF `hardware/` scope: the model designation."""
        return self._first("hardware")

    @property
    def model(self) -> str | None:
        """The model: ONVIF's `hardware/` scope, or a vendor `model/` scope."""
        return self._first("hardware", "model")

    @property
    def manufacturer(self) -> str | None:
        """An explicit `manufacturer/` (or `mfr/`, `vendor/`, `brand/`) scope; not guessed from `name`."""
        return self._first(*_MANUFACTURER_KEYS)

    @property
    def mac(self) -> str | None:
        """A vendor `MAC/` scope, as written."""
        return self._first("mac")

    @property
    def firmware(self) -> str | None:
        """A vendor `firmware/` scope."""
        return self._first("firmware")

    @property
    def location(self) -> tuple[str, ...]:
        """ONVIF `location/` scopes, e.g. "country/china"."""
        return self.scope_values("location")

    @property
    def type_names(self) -> tuple[str, ...]:
        """Local parts of `types`, e.g. "NetworkVideoTransmitter"."""
        return tuple(t.rpartition(":")[2] for t in self.types)


def _item(elem: ET.Element) -> WsdItem:
    address: str | None = None
    epr = child(elem, "EndpointReference")
    if epr is not None:
        address = child_text(epr, "Address")
    version_text = child_text(elem, "MetadataVersion")
    version: int | None = None
    # isdigit() alone admits non-ASCII digits ("²") that int() refuses.
    if version_text and version_text.isascii() and version_text.isdigit() and len(version_text) < 12:
        version = int(version_text)
    return WsdItem(
        address=address,
        types=_words(elem, "Types"),
        scopes=_words(elem, "Scopes"),
        xaddrs=_words(elem, "XAddrs"),
        metadata_version=version,
    )


@dataclass(frozen=True, slots=True)
class WsdMessage:
    """One WS-Discovery message. `items` has one entry per match (ProbeMatches may hold several)."""

    action: str
    message_id: str | None
    relates_to: str | None
    to: str | None
    items: tuple[WsdItem, ...]

    @classmethod
    def parse(cls, data: bytes) -> WsdMessage:
        """Parse one SOAP-over-UDP datagram; raises AnalyzerError when it is not WS-Discovery."""
        return parse(data)

    @property
    def first(self) -> WsdItem | None:
        """The first item, if any."""
        return self.items[0] if self.items else None

    @property
    def types(self) -> tuple[str, ...]:
        """Types of the first item (a Probe's requested types, a match's offered types)."""
        return self.items[0].types if self.items else ()

    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes of the first item."""
        return self.items[0].scopes if self.items else ()

    @property
    def xaddrs(self) -> tuple[str, ...]:
        """Transport addresses of the first item."""
        return self.items[0].xaddrs if self.items else ()

    @property
    def name(self) -> str | None:
        """ONVIF `name/` scope of the first item."""
        return self.items[0].name if self.items else None

    @property
    def hardware(self) -> str | None:
        """ONVIF `hardware/` scope of the first item."""
        return self.items[0].hardware if self.items else None

    @property
    def model(self) -> str | None:
        """Model of the first item (its `hardware/` scope)."""
        return self.items[0].model if self.items else None

    @property
    def manufacturer(self) -> str | None:
        """Explicit manufacturer scope of the first item."""
        return self.items[0].manufacturer if self.items else None


def parse(data: bytes) -> WsdMessage:
    """Parse a WS-Discovery SOAP envelope."""
    root = parse_xml(data, PROTOCOL)
    if local_name(root.tag) != "Envelope":
        raise AnalyzerError(PROTOCOL, f"root element {local_name(root.tag)!r} is not a SOAP Envelope")
    header = child(root, "Header")
    body = child(root, "Body")
    if body is None:
        raise AnalyzerError(PROTOCOL, "SOAP Envelope without a Body")
    action_uri = child_text(header, "Action") if header is not None else None
    first = next(iter(body), None)
    action = ""
    if action_uri:
        action = action_uri.rstrip("/").rpartition("/")[2]
    if not action and first is not None:
        action = local_name(first.tag)
    if not action:
        raise AnalyzerError(PROTOCOL, "no Action header and an empty Body")
    items: list[WsdItem] = []
    if first is not None:
        container = _MATCH_CONTAINERS.get(local_name(first.tag))
        if container is not None:
            items = [_item(c) for c in first if local_name(c.tag) == container]
        else:
            items = [_item(first)]
    return WsdMessage(
        action=action,
        message_id=child_text(header, "MessageID") if header is not None else None,
        relates_to=child_text(header, "RelatesTo") if header is not None else None,
        to=child_text(header, "To") if header is not None else None,
        items=tuple(items),
    )


def looks_like(payload: bytes) -> bool:
    """Cheap check: XML with an `Envelope` element within the first 200 bytes."""
    head = payload[:200]
    return b"<" in head and b"Envelope" in head


# ------------------------------------------------------------------------------ protocol binding


def handle_wsd(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    if msg.action.lower() in ("probematches", "hello", "resolvematches"):
        for item in msg.items:
            maker, model = item.manufacturer, item.model
            if maker or model:
                vendor = vendor_from(" ".join(filter(None, (maker, model, item.name))), MAKER_VENDORS)
                # A field the device left out is left out here too (no "manufacturer=None" in a report).
                detail = " ".join(f"{k}={v}" for k, v in (("manufacturer", maker), ("model", model)) if v)
                ctx.fact(flow, from_src, "wsd", detail, vendor=vendor, model=model, protocol="wsd")
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="wsd", handler=handle_wsd, udp_ports=(3702,), sniff=looks_like, udp_guess=100, control=True
    ),
)
