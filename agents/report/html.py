"""``index.html``: the phase-out ledger as one self-contained page for a programme manager (docs/report.md).

No network: styles, charts (inline SVG) and the small script that sorts tables are in the page; nothing is
fetched. Every number on the page comes from the same :class:`~agents.report.ledger.Ledger` as
``ledger.csv``, and is marked for machines as well as people: the summary figures carry ``data-figure``,
chart bars ``data-bar`` and ``data-value``, ledger cells ``data-col`` (a test compares them with the CSV in
a headless browser).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from html import escape
from typing import Final

from agents.report.ledger import UNREGISTERED, Ledger, Row
from monitor import __version__

__all__ = ["FIGURES", "figures", "render"]

#: The summary figures, in page order: name -> label.
FIGURES: Final = {
    "devices": "devices in the ledger",
    "status-active": "active",
    "status-scheduled": "replacement scheduled",
    "status-removed": "removed",
    "status-unregistered": "not in the register",
    "overdue": "overdue replacements",
    "internet": "talked to the Internet",
    "vendor-cloud": "contacted a vendor cloud",
    "p2p": "P2P to the Internet",
    "alerts": "alerts",
}
_STATUS_ORDER: Final = ("scheduled", "active", UNREGISTERED, "removed")
_STATUS_COLOURS: Final = {
    "active": "#3b82f6",
    "scheduled": "#f59e0b",
    "removed": "#10b981",
    UNREGISTERED: "#ef4444",
}
# The ledger table shows these; the rest are in the CSV (and the evidence in each row's details).
_TABLE: Final = (
    "mac", "name", "location", "ip", "vendor", "model", "firmware", "status", "replace_by", "overdue",
    "first_seen", "last_seen", "external_destinations", "last_external", "vendor_cloud", "p2p", "upnp",
    "default_credentials", "exploit_attempts", "alerts", "containment",
)  # fmt: skip
_SCRIPT: Final = """
document.querySelectorAll("table.sortable th").forEach(function (th, index) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var up = th.dataset.sorted !== "up";
    rows.sort(function (a, b) {
      var x = a.cells[index].textContent, y = b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var numbers = !isNaN(nx) && !isNaN(ny) && String(nx) === x && String(ny) === y;
      var c = numbers ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.dataset.sorted = up ? "up" : "down";
  });
});
"""
_STYLE: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #111827; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #e5e7eb; }
.meta { color: #6b7280; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.figure { border: 1px solid #e5e7eb; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.figure .n { font-size: 1.8em; font-weight: 600; display: block; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 12px; }
th, td { border: 1px solid #e5e7eb; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; cursor: pointer; }
td.num { text-align: right; }
td[data-col="mac"], td[data-col$="seen"], td[data-col^="last_"], td[data-col="replace_by"] {
  white-space: nowrap;
}
tr.overdue td { background: #fef3c7; }
.empty { color: #6b7280; font-style: italic; }
details summary { cursor: pointer; }
"""


def figures(ledger: Ledger) -> dict[str, int]:
    """The summary figures (:data:`FIGURES`), computed from the ledger's rows."""
    out = {
        "devices": len(ledger.rows),
        "overdue": ledger.count("overdue", "yes"),
        "internet": ledger.with_some("external_destinations"),
        "vendor-cloud": ledger.with_some("vendor_cloud"),
        "p2p": ledger.with_some("p2p"),
        "alerts": ledger.total("alerts"),
    }
    for status in ("active", "scheduled", "removed", UNREGISTERED):
        out[f"status-{status}"] = ledger.count("status", status)
    return {name: out[name] for name in FIGURES}


def render(ledger: Ledger, generated: datetime | None = None) -> str:
    """The page."""
    generated = generated or datetime.now(UTC)
    title = f"Removal programme: {ledger.site}" if ledger.site else "Removal programme"
    day = ledger.as_of.isoformat()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network, even by mistake: nothing may be fetched from anywhere but the page itself.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">As of <time data-as-of="{day}">{day}</time>;'
        f" generated {escape(generated.strftime('%Y-%m-%d %H:%M UTC'))} by camwatch {escape(__version__)}. "
        "One row per watched device and per device of the asset register; <code>ledger.csv</code> beside "
        "this page has every column.</p>",
        _figures(ledger),
        '<h2>Devices</h2><div class="charts">',
        _bars("By status", "status", _by(ledger.rows, "status", _STATUS_ORDER), ledger.as_of),
        _bars("By vendor", "vendor", _by_vendor(ledger.rows), ledger.as_of),
        _bars("Replacements due, by month", "due", _due_by_month(ledger), ledger.as_of),
        "</div>",
        _overdue(ledger),
        _talkers(ledger),
        _ledger_table(ledger),
        _sources(ledger),
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _figures(ledger: Ledger) -> str:
    cells = [
        f'<div class="figure"><span class="n" data-figure="{name}">{value}</span>{escape(label)}</div>'
        for (name, value), label in zip(figures(ledger).items(), FIGURES.values(), strict=True)
    ]
    return '<div class="figures">' + "".join(cells) + "</div>"


def _by(rows: Sequence[Row], column: str, order: Sequence[str]) -> list[tuple[str, int]]:
    counts = Counter(r[column] for r in rows)
    return [(key, counts.get(key, 0)) for key in order]


def _by_vendor(rows: Sequence[Row]) -> list[tuple[str, int]]:
    counts = Counter(r["manufacturer"] or r["vendor"] or "unknown" for r in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:15]


def _due_by_month(ledger: Ledger) -> list[tuple[str, int]]:
    counts = Counter(r["replace_by"][:7] for r in ledger.rows if r["replace_by"] and r["status"] != "removed")
    return sorted(counts.items())


def _bars(title: str, kind: str, data: list[tuple[str, int]], as_of: date) -> str:
    """A horizontal bar chart as inline SVG; each bar is marked ``data-bar="<kind>:<key>"``."""
    head = f"<figure><figcaption><strong>{escape(title)}</strong></figcaption>"
    if not data or not any(v for _, v in data):
        return head + '<p class="empty">nothing to show</p></figure>'
    width, bar_h, label_w = 420, 22, 150
    top = max(v for _, v in data)
    height = bar_h * len(data) + 4
    items = []
    for i, (key, value) in enumerate(data):
        y = i * bar_h + 2
        w = 0 if top == 0 else round((width - label_w - 50) * value / top)
        colour = _STATUS_COLOURS.get(key, "#6366f1") if kind == "status" else "#6366f1"
        if kind == "due" and key < as_of.isoformat()[:7]:
            colour = "#f59e0b"  # a month already past: those replacements are overdue
        items.append(
            f'<g data-bar="{escape(kind)}:{escape(key)}" data-value="{value}">'
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(key or "none")}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1) if value else 0}" height="{bar_h - 6}" '
            f'fill="{colour}"></rect>'
            f'<text x="{label_w + w + 6}" y="{y + 15}">{value}</text></g>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-size="12">' + "".join(items) + "</svg>"
    )
    return head + svg + "</figure>"


def _overdue(ledger: Ledger) -> str:
    rows = sorted(
        (r for r in ledger.rows if r["overdue"] == "yes"), key=lambda r: (r["replace_by"], r["mac"])
    )
    head = "<h2>Overdue replacements</h2>"
    if not rows:
        return head + '<p class="empty">None: no device of the register is past its replace_by date.</p>'
    body = []
    for r in rows:
        days = (ledger.as_of - date.fromisoformat(r["replace_by"])).days
        body.append(
            f'<tr data-mac="{r["mac"]}">'
            + _cells(r, ("name", "mac", "location", "owner", "status", "replace_by"))
            + f'<td class="num" data-col="days_overdue">{days}</td>'
            + _cells(r, ("last_seen", "alerts"))
            + "</tr>"
        )
    return (
        head
        + '<table class="sortable" id="overdue"><thead><tr>'
        + _headers(
            (
                "name",
                "mac",
                "location",
                "owner",
                "status",
                "replace_by",
                "days overdue",
                "last seen",
                "alerts",
            )
        )
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _talkers(ledger: Ledger) -> str:
    rows = [
        r
        for r in ledger.rows
        if r.number("external_destinations") or r.number("vendor_cloud") or r.number("p2p")
    ]
    rows.sort(key=lambda r: (max(r["last_external"], r["last_vendor_cloud"]), r["mac"]), reverse=True)
    head = "<h2>Devices that talked to the Internet or a vendor cloud</h2>"
    if not rows:
        return head + '<p class="empty">None seen in the alerts and flow records given.</p>'
    columns = ("name", "mac", "location", "status", "external_destinations", "last_external",
               "vendor_cloud_names", "last_vendor_cloud", "p2p", "upnp")  # fmt: skip
    body = "".join(f'<tr data-mac="{r["mac"]}">' + _cells(r, columns) + "</tr>" for r in rows)
    return (
        head
        + '<p class="meta">Most recent first. Destinations are off-site addresses in the device\'s flows and '
        "alerts; vendor-cloud names are those the device looked up or connected to.</p>"
        + '<table class="sortable" id="talkers"><thead><tr>'
        + _headers(tuple(c.replace("_", " ") for c in columns))
        + f"</tr></thead><tbody>{body}</tbody></table>"
    )


def _ledger_table(ledger: Ledger) -> str:
    head = "<h2>The ledger</h2>"
    if not ledger.rows:
        return head + '<p class="empty">No watched device and no device in the register.</p>'
    body = []
    for r in ledger.rows:
        evidence = "".join(f"<li><b>{escape(k)}</b>: {escape(d)}</li>" for k, d in r.evidence)
        proof = (
            f"<details><summary>{len(r.evidence)}</summary><ul>{evidence}</ul></details>"
            if r.evidence
            else "0"
        )
        cls = ' class="overdue"' if r["overdue"] == "yes" else ""
        body.append(f'<tr data-mac="{r["mac"]}"{cls}>' + _cells(r, _TABLE) + f"<td>{proof}</td></tr>")
    return (
        head + '<p class="meta">Click a column to sort. Evidence: how the vendor was attributed (MAC block, '
        "discovery replies, banners, certificates, DHCP), each signal with what it said.</p>"
        + '<table class="sortable" id="ledger"><thead><tr>'
        + _headers((*(c.replace("_", " ") for c in _TABLE), "evidence"))
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _sources(ledger: Ledger) -> str:
    items = "".join(
        f"<li>{escape(kind)}: <code>{escape(src)}</code></li>" for kind, src in ledger.sources.items()
    )
    return f'<h2>Sources</h2><ul class="meta">{items or "<li>none</li>"}</ul>'


def _cells(row: Row, columns: Iterable[str]) -> str:
    out = []
    for c in columns:
        value = row[c]
        cls = ' class="num"' if c in _NUMERIC else ""
        out.append(f'<td data-col="{c}"{cls}>{escape(value)}</td>')
    return "".join(out)


def _headers(names: Iterable[str]) -> str:
    return "".join(f"<th>{escape(n)}</th>" for n in names)


_NUMERIC: Final = frozenset({"external_destinations", "vendor_cloud", "p2p", "upnp", "default_credentials",
                             "exploit_attempts", "alerts"})  # fmt: skip
