"""The compose stack's Grafana (deploy/compose/compose.yaml, dashboards/provisioning): docker cannot run
here, so the wiring Grafana depends on is checked from the files. Grafana reads provisioning only from the
kind folders (provisioning/datasources/*.yaml, provisioning/dashboards/*.yaml), a file provider loads the
dashboards from a path inside the container, and the data source reaches Prometheus by its compose service
name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
PROVISIONING = ROOT / "dashboards" / "provisioning"
DASHBOARD_JSON = ROOT / "dashboards" / "json"

# The folders of /etc/grafana/provisioning that Grafana 11 reads, and the list key each kind's files hold.
GRAFANA_KINDS = {
    "datasources": "datasources",
    "dashboards": "providers",
    "plugins": "apps",
    "alerting": None,  # several keys (groups, contactPoints, policies, ...)
    "access-control": None,
}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def grafana() -> dict[str, Any]:
    service = compose()["services"]["grafana"]
    assert isinstance(service, dict)
    return service


def named_volumes() -> set[str]:
    return set(compose().get("volumes") or {})


def mounts(service: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(source, container path) of each of the service's volumes (short syntax): a bind mount's source is
    its path relative to the repository, a named volume's its name."""
    found = []
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            source = (COMPOSE.parent / source).resolve().relative_to(ROOT).as_posix()
        else:
            assert source in named_volumes(), volume
        found.append((source, PurePosixPath(target)))
    return found


def covers(target: PurePosixPath, path: PurePosixPath) -> bool:
    return path == target or target in path.parents


def repo_path(container_path: str, service: dict[str, Any]) -> Path | None:
    """The repository path the service sees at a container path, through the deepest mount covering it;
    None when none does or the deepest is a named volume."""
    path = PurePosixPath(container_path)
    covering = [(s, t) for s, t in mounts(service) if covers(t, path)]
    if not covering:
        return None
    source, target = max(covering, key=lambda m: len(m[1].parts))
    return None if source in named_volumes() else ROOT / source / path.relative_to(target)


def provisioning_files(kind: str) -> list[Path]:
    return sorted(p for p in (PROVISIONING / kind).glob("*") if p.suffix in (".yaml", ".yml"))


def test_every_provisioning_file_sits_in_a_folder_grafana_reads() -> None:
    files = sorted(p for p in PROVISIONING.rglob("*") if p.is_file())
    assert files
    for path in files:
        rel = path.relative_to(PROVISIONING)
        # Grafana ignores a file directly in provisioning/ and does not descend below the kind folders.
        assert len(rel.parts) == 2 and rel.parts[0] in GRAFANA_KINDS, f"Grafana does not read {rel}"
        assert path.suffix in (".yaml", ".yml"), f"Grafana reads only *.yaml and *.yml: {rel}"
        key = GRAFANA_KINDS[rel.parts[0]]
        content = yaml.safe_load(path.read_text())
        assert content["apiVersion"] == 1, rel
        if key is not None:
            assert isinstance(content.get(key), list) and content[key], f"{rel} has no {key}"
    assert provisioning_files("datasources") and provisioning_files("dashboards")


def test_grafana_mounts_the_provisioning_folder() -> None:
    assert ("dashboards/provisioning", PurePosixPath("/etc/grafana/provisioning")) in mounts(grafana())


def test_every_bind_mount_of_the_stack_exists_in_the_repository() -> None:
    for name, service in compose()["services"].items():
        for source, target in mounts(service):
            if source in named_volumes():
                continue
            assert (ROOT / source).exists(), (name, source, str(target))


def test_the_dashboard_provider_reads_the_mounted_dashboard_json() -> None:
    service = grafana()
    volume_targets = [t for s, t in mounts(service) if s in named_volumes()]
    providers = [
        p for f in provisioning_files("dashboards") for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers
    dashboards = sorted(DASHBOARD_JSON.glob("*.json"))
    assert dashboards
    for provider in providers:
        assert provider["type"] == "file", provider["name"]
        path = provider["options"]["path"]
        # Not inside a named volume's mount (grafana-data at /var/lib/grafana): its contents would be the
        # volume's, or the bind mount's only by the order in which the runtime mounts them.
        hidden = [str(t) for t in volume_targets if covers(t, PurePosixPath(path))]
        assert not hidden, f"provider path {path} is inside the volume mounted at {hidden}"
        shown = repo_path(path, service)
        assert shown is not None, f"compose mounts nothing from the repository at the provider path {path}"
        assert shown.resolve() == DASHBOARD_JSON, f"{path} shows {shown}, not dashboards/json"
    # What the provider finds there: every committed dashboard, and nothing that is not one.
    assert all(p.is_file() and p.read_text().lstrip().startswith("{") for p in dashboards)
    assert {p.name for p in DASHBOARD_JSON.iterdir()} == {p.name for p in dashboards}


def test_the_datasource_url_is_the_compose_prometheus() -> None:
    services = compose()["services"]
    datasources = [
        d for f in provisioning_files("datasources") for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert datasources
    for datasource in datasources:
        url = urlsplit(datasource["url"])
        assert url.hostname in services, f"{datasource['url']}: no compose service {url.hostname}"
        service = services[url.hostname]
        # Grafana reaches the service over the compose network: the container side of its published ports.
        container_ports = {int(str(p).rpartition(":")[2]) for p in service.get("ports", [])}
        assert url.port in container_ports, (
            f"{datasource['url']}: {url.hostname} has {sorted(container_ports)}"
        )
        if datasource["type"] == "prometheus":
            assert str(service["image"]).startswith("prom/prometheus:"), service["image"]
            assert not any("web.listen-address" in str(arg) for arg in service.get("command", []))


def test_the_grafana_image_is_the_version_the_dashboards_target() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (target,) = re.findall(r"targeting \*\*Grafana (\d+\.\d+)\*\*", readme)
    image, _, tag = str(grafana()["image"]).partition(":")
    assert image in ("grafana/grafana-oss", "grafana/grafana"), image
    assert re.fullmatch(rf"{re.escape(target)}\.\d+", tag), (
        f"compose pins Grafana {tag}, README says {target}"
    )
    # The generator's SDK is pinned to the same Grafana version (its version after the epoch).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (sdk,) = [
        d for d in project["project"]["optional-dependencies"]["dev"] if d.startswith("grafana-foundation")
    ]
    assert sdk.rpartition("!")[2].startswith(f"{target}."), sdk
