"""Passive fingerprints of camera makers in what devices say about themselves (banners, realms,
certificates, discovery replies), and the display name of each vendor key.

Sources: nmap-service-probes and rapid7/recog (HTTP and RTSP ``Server`` banners, ``WWW-Authenticate``
realms, default certificate subjects); docs/design.md lists them with the other domain facts.
"""

from __future__ import annotations

# (lowercase needle, vendor key): the first needle found in the text names the vendor.
Fingerprints = tuple[tuple[str, str], ...]

SERVER_VENDORS: Fingerprints = (
    ("app-webs", "hikvision"),
    ("hikvision-webs", "hikvision"),
    ("dnvrs-webs", "hikvision"),
    ("dvrdvs-webs", "hikvision"),
    ("dahua rtsp server", "dahua"),
    ("dahua", "dahua"),
    ("h264dvr", "xiongmai"),
    ("uc-httpd", "xiongmai"),
    ("netsurveillance", "xiongmai"),
    ("hipcam", "xiongmai"),
)
REALM_VENDORS: Fingerprints = (
    ("hikvision", "hikvision"),
    ("dahua", "dahua"),
    ("ezviz", "ezviz"),
)
CERT_VENDORS: Fingerprints = REALM_VENDORS
# ONVIF WS-Discovery scopes: manufacturer, hardware and name.
MAKER_VENDORS: Fingerprints = (
    ("hikvision", "hikvision"),
    ("hik", "hikvision"),
    ("dahua", "dahua"),
    ("ezviz", "ezviz"),
    ("imou", "imou"),
    ("uniview", "uniview"),
    ("unv", "uniview"),
    ("tiandy", "tiandy"),
    ("xiongmai", "xiongmai"),
    ("axis", "axis"),
)

# Display names of vendor keys a protocol (not the MAC) revealed.
VENDOR_NAMES = {
    "hikvision": "Hikvision",
    "dahua": "Dahua",
    "ezviz": "EZVIZ",
    "imou": "Imou",
    "uniview": "Uniview",
    "xiongmai": "Xiongmai",
    "tiandy": "Tiandy",
    "axis": "Axis",
    "huawei": "Huawei",
}


def vendor_from(text: str | None, table: Fingerprints) -> str | None:
    """The vendor key whose needle occurs in ``text`` (case-insensitive), or None."""
    if not text:
        return None
    low = text.lower()
    for needle, vendor in table:
        if needle in low:
            return vendor
    return None


def display_name(vendor: str) -> str:
    """How people read a vendor key."""
    return VENDOR_NAMES.get(vendor, vendor.title())
