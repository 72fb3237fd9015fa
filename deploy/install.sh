#!/usr/bin/env bash
# Install the camwatch gateway agent on an appliance (Debian, x86_64 or aarch64), from a checkout or an sdist.
#
#   deploy/install.sh [--source DIR|SDIST.tar.gz] [--root DIR] [--no-start] [--python PYTHON3] [--stream-probe]
#
# - /opt/camwatch/venv: a virtual environment with camwatch and its `agent` extra (pip, from the registry),
#   and the `stream` extra (PyAV, OpenCV) with --stream-probe, for the agent's `stream_probe` section;
# - /etc/camwatch/agent.yaml (and site-policy.yaml) from examples/, only if absent, with run_as_user: null;
# - /etc/systemd/system/camwatch.service, enabled; started (enable --now) only when systemd is running,
#   --root is not given and --no-start is not given.
# Running it again upgrades camwatch in place and leaves the configuration alone.
# --root DIR installs into a staged root (image building, tests): nothing outside DIR is touched, and the
# virtual environment's scripts are rewritten to name /opt/camwatch/venv, where it will live.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_arg="$(dirname "$here")"
root=""
start=1
python="python3"
extras="agent"

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --root=*) root="${1#--root=}"; shift ;;
    --source) source_arg="${2:?--source needs a directory or an sdist}"; shift 2 ;;
    --source=*) source_arg="${1#--source=}"; shift ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --python=*) python="${1#--python=}"; shift ;;
    --no-start) start=0; shift ;;
    --stream-probe) extras="agent,stream"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
  [ "$root" = "/" ] && root=""
fi

log() { printf 'camwatch install: %s\n' "$*"; }
die() { printf 'camwatch install: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found: apt-get install -y python3 python3-venv"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "camwatch needs Python 3.11 or newer ($python is $("$python" -V 2>&1))"
"$python" -c 'import ensurepip, venv' 2>/dev/null || die "python venv support missing: apt-get install -y python3-venv"

# The source: a checkout (directory with pyproject.toml) or an sdist, unpacked to a temporary directory.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -d "$source_arg" ]; then
  src="$(cd "$source_arg" && pwd)"
elif [ -f "$source_arg" ]; then
  mkdir "$tmp/sdist"
  tar -xzf "$source_arg" -C "$tmp/sdist"
  src="$(find "$tmp/sdist" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
else
  die "source '$source_arg' is neither a directory nor an sdist"
fi
[ -f "$src/pyproject.toml" ] || die "$source_arg is not a camwatch source tree (no pyproject.toml)"
for f in deploy/systemd/camwatch.service examples/agent.yaml; do
  [ -f "$src/$f" ] || die "$source_arg lacks $f (an sdist must include deploy/ and examples/)"
done

prefix="/opt/camwatch/venv"
venv="$root$prefix"
etc="$root/etc/camwatch"
unitdir="$root/etc/systemd/system"

# 1. The virtual environment and camwatch[agent] (+stream). pip builds from a copy so the checkout stays clean.
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
mkdir "$tmp/src"
tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
  --exclude=./out --exclude=./benchmarks/out --exclude=./tests --exclude='.*_cache' --exclude=./.hypothesis \
  -cf - . | tar -C "$tmp/src" -xf -
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
log "installing camwatch[$extras] into $venv"
"${pip[@]}" install --quiet "camwatch[$extras] @ file://$tmp/src"
# Same version number from a newer checkout: replace the package itself (dependencies stay).
"${pip[@]}" install --quiet --no-deps --force-reinstall "camwatch @ file://$tmp/src"

if [ -n "$root" ]; then
  # Scripts name their interpreter by absolute path; make them name the final location.
  grep -rlF "$venv" "$venv/bin" | while IFS= read -r f; do
    sed -i "s|$venv|$prefix|g" "$f"
  done
fi
"$venv/bin/python" -c 'import agents.cli, aiomqtt, prometheus_client' \
  || die "the installed agent does not import"

# 2. Configuration: never overwritten.
mkdir -p "$etc"
chmod 0755 "$etc"
if [ ! -e "$etc/agent.yaml" ]; then
  log "writing $etc/agent.yaml from examples/agent.yaml (edit site, capture.interfaces and mqtt)"
  sed -e 's|^run_as_user:.*|run_as_user: null                  # systemd runs camwatch as a DynamicUser with CAP_NET_RAW: nothing to drop|' \
    "$src/examples/agent.yaml" >"$tmp/agent.yaml"
  install -m 0644 "$tmp/agent.yaml" "$etc/agent.yaml"
else
  log "keeping existing $etc/agent.yaml"
fi
if [ -f "$src/examples/site-policy.yaml" ] && [ ! -e "$etc/site-policy.yaml" ]; then
  log "writing $etc/site-policy.yaml from examples/ (replace it with this site's policy: docs/policy.md)"
  install -m 0644 "$src/examples/site-policy.yaml" "$etc/site-policy.yaml"
fi

# 3. The unit, enabled.
mkdir -p "$unitdir/multi-user.target.wants"
install -m 0644 "$src/deploy/systemd/camwatch.service" "$unitdir/camwatch.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    if systemctl is-active --quiet camwatch.service; then
      systemctl enable camwatch.service
      systemctl restart camwatch.service
    else
      systemctl enable --now camwatch.service
    fi
    log "camwatch.service enabled and started: journalctl -u camwatch -f"
  else
    systemctl enable camwatch.service
    log "camwatch.service enabled, not started: systemctl start camwatch"
  fi
else
  # What `systemctl enable` does, without a running systemd.
  ln -sfn /etc/systemd/system/camwatch.service "$unitdir/multi-user.target.wants/camwatch.service"
  log "camwatch.service installed and enabled${root:+ in $root}; systemd is not running here, so nothing was started."
  log "on the appliance: edit /etc/camwatch/agent.yaml, then"
  log "  /opt/camwatch/venv/bin/camwatch check-config /etc/camwatch/agent.yaml"
  log "  systemctl daemon-reload && systemctl enable --now camwatch"
fi
log "done"
