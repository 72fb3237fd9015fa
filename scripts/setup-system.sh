# shellcheck shell=bash
# Sourced by scripts/test: the system packages the tests talk to for real (MQTT broker, Prometheus,
# Alertmanager, network namespaces, openssl, shellcheck, nftables for containment, rsyslog with its TLS driver for the syslog sink,
# chromium to render the phase-out report headless). Installed with apt when missing; needs root (CI
# runs as root). With CAMWATCH_REQUIRE_ENV=1 (CI) a package that cannot be installed is an error here,
# not skipped tests later.
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v prometheus >/dev/null || need+=(prometheus)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null || need+=(rsyslog-gnutls)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  elif [ "${CAMWATCH_REQUIRE_ENV:-0}" = 1 ]; then
    echo "camwatch: missing ${need[*]} and cannot install them (needs root and apt-get);" \
      "CAMWATCH_REQUIRE_ENV=1 refuses to skip the tests that need them" >&2
    return 1
  else
    echo "camwatch: missing ${need[*]}; the tests that need them will be skipped (install them as root)" >&2
  fi
fi
