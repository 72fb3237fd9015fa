"""Generate camwatch's Grafana dashboards with the Grafana Foundation SDK.

    python dashboards/generate.py           # write dashboards/json/*.json
    python dashboards/generate.py --check   # exit 1 if the committed JSON is not what this would write

Every query uses only the metrics of docs/metrics.md (plus ``up`` and ``process_*``); ``site`` and ``gateway``
are Prometheus scrape-target labels, the job is ``camwatch``. The datasource uid is fixed
(:data:`DATASOURCE_UID`) and provisioned by ``dashboards/provisioning/datasources/camwatch.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

JSON_DIR = Path(__file__).resolve().parent / "json"
DATASOURCE_UID = "camwatch-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# Selectors of the template variables (Prometheus target labels).
SEL = 'job="camwatch", site=~"$site", gateway=~"$gateway"'
SITE_SEL = 'job="camwatch", site=~"$site"'
RI = "$__rate_interval"
# The rules about attacks on cameras and compromised cameras (docs/design.md §4.2).
# What a camera sends out that it should not: unexpected destinations, DNS, P2P, UPnP, a remote platform.
EGRESS_RULES = 'rule=~"egress[.].*|dns[.].*|p2p[.].*|upnp[.].*|platform[.].*"'
ATTACK_RULES = 'rule=~"exploit[.]attempt|auth[.].*|device[.](scanning|telnet|exposed|flooding|bittorrent)"'

Panel = Any  # one of the SDK's panel builders (timeseries.Panel, stat.Panel, table.Panel)


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def ts(title: str, unit: str, *queries: prometheus.Dataquery, desc: str = "", w: int = 12) -> Panel:
    p = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(w).min(0)
    if desc:
        p = p.description(desc)
    for q in queries:
        p = p.with_target(q)
    return p


def stat_panel(title: str, q: prometheus.Dataquery, unit: str = "short", w: int = 6, desc: str = "") -> Panel:
    p = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(w).with_target(q)
    if desc:
        p = p.description(desc)
    return p


def table_panel(title: str, q: prometheus.Dataquery, w: int = 24, desc: str = "") -> Panel:
    p = table.Panel().title(title).datasource(DATASOURCE).height(8).span(w).with_target(q)
    if desc:
        p = p.description(desc)
    return p


def variable(name: str, expr: str, *, include_all: bool = True) -> db.QueryVariable:
    v = (
        db.QueryVariable(name)
        .label(name)
        .query(expr)
        .datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    if include_all:
        v = v.include_all(True).all_value(".*").multi(True)
    return v


def site_gateway_variables() -> list[db.QueryVariable]:
    return [
        variable("site", 'label_values(camwatch_build_info{job="camwatch"}, site)'),
        variable("gateway", 'label_values(camwatch_build_info{job="camwatch", site=~"$site"}, gateway)'),
    ]


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["camwatch"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .editable()
    )


def fleet_overview() -> db.Dashboard:
    d = base(
        "camwatch-fleet", "camwatch / Fleet overview", "Every camwatch gateway: up, alerts, off-site traffic."
    )
    d = d.variables([*site_gateway_variables()])
    d = (
        d.with_row(db.Row("Fleet"))
        .with_panel(stat_panel("Agents up", query(f"sum(up{{{SEL}}})"), desc="Scrape targets answering."))
        .with_panel(stat_panel("Agents down", query(f"count(up{{{SEL}}} == 0) or vector(0)")))
        .with_panel(stat_panel("Sites", query(f"count(count by (site) (camwatch_build_info{{{SEL}}}))")))
        .with_panel(stat_panel("Watched devices", query(f'sum(camwatch_devices{{{SEL}, watched="true"}})')))
        .with_panel(
            ts(
                "Watched devices by vendor",
                "short",
                query(f'sum by (vendor) (camwatch_devices{{{SEL}, watched="true"}})', "{{vendor}}"),
            )
        )
        .with_panel(
            ts(
                "Alerts by rule",
                "short",
                query(f"sum by (rule) (increase(camwatch_alerts_total{{{SEL}}}[{RI}]))", "{{rule}}"),
            )
        )
        .with_panel(
            stat_panel(
                "Attack alerts (24h)",
                query(f"sum(increase(camwatch_alerts_total{{{SEL}, {ATTACK_RULES}}}[24h])) or vector(0)"),
                desc="Exploit attempts, password guessing, factory passwords, scanning, floods, telnet on "
                "cameras, cameras the Internet can reach.",
            )
        )
        .with_panel(
            stat_panel(
                "Alerts folded into incidents (24h)",
                query(f"sum(increase(camwatch_alerts_folded_total{{{SEL}}}[24h])) or vector(0)"),
                desc="Alerts not sent because their device's incident already said it (caps, a scan's own "
                "connections): the MQTT alerts carry camwatch.incident.folded.",
            )
        )
        .with_panel(
            ts(
                "Devices talking off site (top 10)",
                "bps",
                query(
                    f"topk(10, sum by (site, mac, vendor) "
                    f'(rate(camwatch_device_external_bytes_total{{{SEL}, mac!="other"}}[{RI}]))) * 8',
                    "{{site}} {{mac}} ({{vendor}})",
                ),
                desc="External traffic (both directions) of the devices with the most.",
            )
        )
        .with_panel(
            ts(
                "Devices with off-site traffic per site",
                "short",
                query(
                    "count by (site) (sum by (site, mac) "
                    f'(increase(camwatch_device_external_bytes_total{{{SEL}, mac!="other"}}[1h])) > 0)',
                    "{{site}}",
                ),
            )
        )
        .with_panel(
            stat_panel(
                "Cameras without video",
                query(f"sum(1 - camwatch_stream_up{{{SEL}}}) or vector(0)"),
                desc="Probed cameras whose last probe failed (stream_probe in the agent config).",
            )
        )
        .with_panel(
            stat_panel(
                "Image problems",
                query(f"sum(camwatch_stream_image_problem{{{SEL}}}) or vector(0)"),
                desc="Probed cameras showing a frozen, black or covered picture.",
            )
        )
        .with_row(db.Row("Capture health"))
        .with_panel(
            ts(
                "Packets captured",
                "pps",
                query(
                    f"sum by (site, gateway) (rate(camwatch_capture_packets_total{{{SEL}}}[{RI}]))",
                    "{{site}}/{{gateway}}",
                ),
            )
        )
        .with_panel(
            ts(
                "Kernel drops",
                "pps",
                query(
                    "sum by (site, gateway, interface) "
                    f"(rate(camwatch_capture_kernel_drops_total{{{SEL}}}[{RI}]))",
                    "{{site}}/{{gateway}} {{interface}}",
                ),
                desc="Live interfaces only (no series for a pcap source).",
            )
        )
    )
    return d


def site_view() -> db.Dashboard:
    d = base("camwatch-site", "camwatch / Site", "One site: devices, alerts, camera traffic.")
    d = d.variables([*site_gateway_variables()])
    d = (
        d.with_row(db.Row("Devices"))
        .with_panel(
            table_panel(
                "Devices by vendor",
                query(f"sum by (site, gateway, vendor, watched) (camwatch_devices{{{SEL}}})", instant=True),
            )
        )
        .with_row(db.Row("Alerts"))
        .with_panel(
            ts(
                "Egress, phone-home and platform alerts by rule",
                "short",
                query(
                    f"sum by (rule) (increase(camwatch_alerts_total{{{SEL}, {EGRESS_RULES}}}[{RI}]))",
                    "{{rule}}",
                ),
            )
        )
        .with_panel(
            ts(
                "RTSP / stream alerts",
                "short",
                query(
                    f'sum by (rule) (increase(camwatch_alerts_total{{{SEL}, rule=~"stream[.].*"}}[{RI}]))',
                    "{{rule}}",
                ),
            )
        )
        .with_row(db.Row("Attacks and compromised cameras"))
        .with_panel(
            ts(
                "Attack and compromise alerts by rule",
                "short",
                query(
                    f"sum by (rule) (increase(camwatch_alerts_total{{{SEL}, {ATTACK_RULES}}}[{RI}]))",
                    "{{rule}}",
                ),
                desc="exploit.attempt, auth.bruteforce, auth.default_credentials, device.scanning, "
                "device.telnet, device.exposed, device.flooding, device.bittorrent: the MQTT alerts name the "
                "device, the attacker and the vulnerability; file.path is the pcap.",
            )
        )
        .with_panel(
            ts(
                "Alerts folded into incidents by rule",
                "short",
                query(f"sum by (rule) (increase(camwatch_alerts_folded_total{{{SEL}}}[{RI}]))", "{{rule}}"),
                desc="Past a device's caps (3 of one rule per 10 min; past 10 in all, repeats of a rule) or "
                "absorbed by a scan.",
            )
        )
        .with_panel(
            ts(
                "Incidents opened",
                "short",
                query(f"sum(increase(camwatch_incidents_total{{{SEL}}}[{RI}]))", "incidents"),
            )
        )
        .with_panel(
            table_panel(
                "Open incidents",
                query(f"max by (device, incident) (camwatch_incident_severity{{{SEL}}})", "", instant=True),
                desc="One row per open incident (its last alert less than an hour ago): the device, the id "
                "its alerts carry (camwatch.incident.id: search the MQTT, syslog or file records for it) "
                "and the highest severity sent. Devices still learning are not listed.",
            )
        )
        .with_panel(
            ts(
                "Evidence pcaps written",
                "short",
                query(f"sum(increase(camwatch_evidence_files_written_total{{{SEL}}}[{RI}]))", "written"),
                query(f"sum(increase(camwatch_evidence_write_errors_total{{{SEL}}}[{RI}]))", "errors", "B"),
            )
        )
        .with_row(db.Row("Camera traffic"))
        .with_panel(
            ts(
                "External traffic per camera",
                "bytes",
                query(
                    f"sum by (mac, vendor, direction) "
                    f'(increase(camwatch_device_external_bytes_total{{{SEL}, mac!="other"}}[{RI}]))',
                    "{{mac}} ({{vendor}}) {{direction}}",
                ),
            )
        )
        .with_panel(
            ts(
                "Bitrate per camera",
                "bps",
                query(
                    f"sum by (mac, vendor, direction) "
                    f"(rate(camwatch_device_external_bytes_total{{{SEL}}}[5m]) * 8)",
                    "{{mac}} ({{vendor}}) {{direction}}",
                ),
            )
        )
        .with_row(db.Row("Camera streams (stream probe)"))
        .with_panel(
            table_panel(
                "Streams",
                query(f"max by (camera, codec, width, height) (camwatch_stream_info{{{SEL}}})", instant=True),
                desc="What each probed camera serves: codec and resolution (stream_probe, agent config).",
            )
        )
        .with_panel(
            ts(
                "Stream up",
                "short",
                query(f"max by (camera) (camwatch_stream_up{{{SEL}}})", "{{camera}}"),
                desc="1 when the last probe opened and decoded the camera's RTSP stream.",
            )
        )
        .with_panel(
            ts(
                "Frame rate",
                "fps",
                query(f"max by (camera) (camwatch_stream_frames_per_second{{{SEL}}})", "{{camera}}"),
            )
        )
        .with_panel(
            ts(
                "Stream bitrate",
                "bps",
                query(f"max by (camera) (camwatch_stream_bitrate_bits_per_second{{{SEL}}})", "{{camera}}"),
            )
        )
        .with_panel(
            ts(
                "Keyframe interval",
                "s",
                query(f"max by (camera) (camwatch_stream_keyframe_interval_seconds{{{SEL}}})", "{{camera}}"),
            )
        )
        .with_panel(
            ts(
                "Image problems",
                "short",
                query(
                    f"max by (camera, problem) (camwatch_stream_image_problem{{{SEL}}})",
                    "{{camera}} {{problem}}",
                ),
                desc="1 while the picture is frozen, black or covered; the MQTT alert links a snapshot.",
            )
        )
        .with_panel(
            ts(
                "Analyzer packets by protocol",
                "pps",
                query(
                    f"sum by (protocol) (rate(camwatch_analyzer_packets_total{{{SEL}}}[{RI}]))",
                    "{{protocol}}",
                ),
            )
        )
    )
    return d


def device_view() -> db.Dashboard:
    d = base("camwatch-device", "camwatch / Device", "One device's traffic with peers outside the site.")
    d = d.variables(
        [
            *site_gateway_variables(),
            variable(
                "mac",
                f'label_values(camwatch_device_external_bytes_total{{{SEL}, mac!="other"}}, mac)',
                include_all=False,
            ),
        ]
    )
    dev = f'{SEL}, mac="$mac"'
    d = (
        d.with_panel(
            stat_panel(
                "Sent off site (24h)",
                query(f'sum(increase(camwatch_device_external_bytes_total{{{dev}, direction="out"}}[24h]))'),
                "bytes",
                12,
            )
        )
        .with_panel(
            stat_panel(
                "Received from off site (24h)",
                query(f'sum(increase(camwatch_device_external_bytes_total{{{dev}, direction="in"}}[24h]))'),
                "bytes",
                12,
            )
        )
        .with_panel(
            ts(
                "Bitrate",
                "bps",
                query(
                    f"sum by (direction) (rate(camwatch_device_external_bytes_total{{{dev}}}[5m]) * 8)",
                    "{{direction}}",
                ),
            )
        )
        .with_panel(
            ts(
                "Packets",
                "pps",
                query(
                    f"sum by (direction) (rate(camwatch_device_external_packets_total{{{dev}}}[{RI}]))",
                    "{{direction}}",
                ),
            )
        )
    )
    return d


def agent_health() -> db.Dashboard:
    d = base(
        "camwatch-agent", "camwatch / Agent health", "The agent process: capture, resources, alert delivery."
    )
    d = d.variables([*site_gateway_variables()])
    by = "site, gateway"
    lg = "{{site}}/{{gateway}}"
    d = (
        d.with_row(db.Row("Capture"))
        .with_panel(
            ts(
                "Kernel drops",
                "pps",
                query(
                    f"sum by ({by}, interface) (rate(camwatch_capture_kernel_drops_total{{{SEL}}}[{RI}]))",
                    lg + " {{interface}}",
                ),
                desc="Live interfaces only (no series for a pcap source).",
            )
        )
        .with_panel(
            ts(
                "Capture sources up",
                "short",
                query(f"camwatch_capture_up{{{SEL}}}", lg + " {{interface}}"),
            )
        )
        .with_row(db.Row("Process"))
        .with_panel(ts("CPU", "percentunit", query(f"rate(process_cpu_seconds_total{{{SEL}}}[5m])", lg)))
        .with_panel(ts("Memory (RSS)", "bytes", query(f"process_resident_memory_bytes{{{SEL}}}", lg)))
        .with_row(db.Row("Alert delivery"))
        .with_panel(ts("Spool depth", "short", query(f"camwatch_spool_alerts{{{SEL}}}", lg)))
        .with_panel(ts("MQTT connected", "short", query(f"camwatch_mqtt_connected{{{SEL}}}", lg)))
        .with_row(db.Row("Evidence"))
        .with_panel(
            ts(
                "Evidence directory",
                "bytes",
                query(f"camwatch_evidence_bytes{{{SEL}}}", lg + " files"),
                query(f"camwatch_evidence_ring_bytes{{{SEL}}}", lg + " rings in memory", "B"),
                desc="The pcaps kept (evidence.max_bytes) and the engine's per-flow packet rings (16 MiB).",
            )
        )
        .with_panel(
            ts(
                "Evidence files deleted",
                "short",
                query(
                    f"sum by ({by}, reason) (increase(camwatch_evidence_files_deleted_total{{{SEL}}}[{RI}]))",
                    lg + " {{reason}}",
                ),
            )
        )
        .with_row(db.Row("Flow table"))
        .with_panel(
            ts(
                "Flows active vs limit",
                "short",
                query(f"camwatch_flows_active{{{SEL}}}", lg + " active"),
                query(f"camwatch_flows_limit{{{SEL}}}", lg + " limit", "B"),
                w=24,
            )
        )
    )
    return d


def removal_programme() -> db.Dashboard:
    """The removal programme: the asset register against what is on the network, fleet and site."""
    d = base(
        "camwatch-removal",
        "camwatch / Removal programme",
        "Cameras to remove: the asset register (status, replace_by) against what each gateway sees.",
    )
    d = d.variables([*site_gateway_variables()])
    # Every gateway of a site reads the site's register: max by site, not sum, so none is counted twice.
    listed = f"max by (site, status) (camwatch_register_assets{{{SITE_SEL}}})"
    in_service = f'{SITE_SEL}, status=~"active|scheduled"'
    overdue = f"max by (site) (camwatch_replacements_overdue{{{SITE_SEL}}})"
    asset = f"max by (site, mac, name, location) (camwatch_asset_info{{{SITE_SEL}}})"
    d = (
        d.with_row(db.Row("Fleet"))
        .with_panel(
            stat_panel(
                "Listed, still in service",
                query(f"sum(max by (site, status) (camwatch_register_assets{{{in_service}}}))"),
                desc="Devices of the asset registers not marked removed.",
            )
        )
        .with_panel(
            stat_panel(
                "Overdue replacements",
                query(f"sum({overdue})"),
                desc="Listed devices not removed after their replace_by date.",
            )
        )
        .with_panel(
            stat_panel(
                "Removed devices seen (24 h)",
                query(f'sum(increase(camwatch_alerts_total{{{SEL}, rule="device.removed_seen"}}[24h]))'),
                desc="device.removed_seen: a device the register lists as removed sent traffic.",
            )
        )
        .with_panel(
            stat_panel(
                "Watched, not in the register",
                query(f'sum(camwatch_devices{{{SEL}, watched="true", status="unregistered"}})'),
                desc="Watched devices the asset register does not list: add them, or find out what they are.",
            )
        )
        .with_panel(
            ts(
                "Watched devices on the network by register status",
                "short",
                query(f'sum by (status) (camwatch_devices{{{SEL}, watched="true"}})', "{{status}}"),
            )
        )
        .with_panel(ts("Overdue replacements per site", "short", query(overdue, "{{site}}")))
        .with_panel(
            table_panel(
                "Asset registers by site and status",
                query(listed, instant=True),
                w=12,
                desc="Rows of each site's register by status, seen on the network or not.",
            )
        )
        .with_panel(
            table_panel(
                "Overdue per site",
                query(f"{overdue} > 0", instant=True),
                w=12,
                desc="Sites with replacements past their date; camwatch report lists the devices.",
            )
        )
        .with_row(db.Row("Site"))
        .with_panel(
            table_panel(
                "Listed devices",
                query(
                    f"max by (site, mac, name, location, status, replace_by, owner) "
                    f"(camwatch_asset_info{{{SITE_SEL}}})",
                    instant=True,
                ),
                desc="The asset register as the agents read it.",
            )
        )
        .with_panel(
            ts(
                "Off-site traffic of listed devices",
                "bps",
                query(
                    f"sum by (site, name, location) (sum by (site, mac) "
                    f'(rate(camwatch_device_external_bytes_total{{{SEL}, mac!="other"}}[{RI}])) '
                    f"* on (site, mac) group_left (name, location) {asset}) * 8",
                    "{{site}} {{name}} ({{location}})",
                ),
                desc="A listed camera talking to the Internet, by its register name and location.",
                w=24,
            )
        )
        .with_panel(
            ts(
                "Removed devices seen",
                "short",
                query(
                    "sum by (site, gateway) "
                    f'(increase(camwatch_alerts_total{{{SEL}, rule="device.removed_seen"}}[{RI}]))',
                    "{{site}} {{gateway}}",
                ),
                w=24,
            )
        )
    )
    return d


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "fleet-overview": fleet_overview,
    "site": site_view,
    "device": device_view,
    "agent-health": agent_health,
    "removal-programme": removal_programme,
}


def render(build: Callable[[], db.Dashboard]) -> str:
    model = build().build()
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def rendered() -> dict[str, str]:
    return {f"{name}.json": render(build) for name, build in DASHBOARDS.items()}


def iter_exprs(data: Any) -> Iterator[str]:
    """Every PromQL ``expr`` of a dashboard's panels (rows' nested panels included)."""
    for panel in data.get("panels", []):
        for target in panel.get("targets", []) or []:
            if "expr" in target:
                yield str(target["expr"])
        yield from iter_exprs(panel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if dashboards/json is not up to date")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = [
            n
            for n, text in files.items()
            if not (JSON_DIR / n).is_file() or (JSON_DIR / n).read_text() != text
        ]
        extra = (
            sorted(p.name for p in JSON_DIR.glob("*.json") if p.name not in files)
            if JSON_DIR.is_dir()
            else []
        )
        for name in stale:
            print(
                f"dashboards/json/{name} is out of date: run python dashboards/generate.py", file=sys.stderr
            )
        for name in extra:
            print(f"dashboards/json/{name} is not generated by dashboards/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    JSON_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
