# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: a virtual environment with camwatch installed.
# Needs only python3 (3.11+); installs every Python dependency from the package registry.
VENV="${CAMWATCH_VENV:-$PWD/.venv}"
PY="$VENV/bin/python"
EXTRAS="${CAMWATCH_EXTRAS:-}"
if ! command -v python3 >/dev/null; then
  echo "camwatch: python3 (3.11 or newer) is required" >&2
  exit 2
fi
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.camwatch-installed${EXTRAS//[^a-z,]/}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$PY" -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS}"
  touch "$stamp"
fi
# Byte-code for the project's modules, kept up to date: an environment that sets PYTHONDONTWRITEBYTECODE
# would otherwise compile every module from source at each start (0.1 s of every `camwatch` command).
"$PY" -m compileall -q monitor agents lab >/dev/null || true
export PY VENV
