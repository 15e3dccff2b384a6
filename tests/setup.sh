#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: nothing is
# installed by hand on a test machine. Idempotent and quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real.
# command:package pairs; the system test runs the real nginx and logrotate,
# gzip is what logrotate compresses with, setpriv runs the agent as nobody.
# The packaging test (packaging/test.sh) installs the .deb (dpkg, adduser),
# reads the .rpm (rpm), checks the unit (systemd-analyze), runs the agent as
# its service user (runuser) and traces its system calls (strace).
need=()
# tests/suite/server_config.rs runs the real nginx and Apache (apache2) with
# configs of its own.
for pair in logrotate:logrotate nginx:nginx-light gzip:gzip setpriv:util-linux \
    runuser:util-linux rpm:rpm systemd-analyze:systemd adduser:adduser strace:strace \
    apache2:apache2 caddy:caddy; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# tests/suite/journal.rs writes journal files with systemd's own writer.
[ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] \
  || need+=(systemd-journal-remote)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# tests/suite/metrics.rs: a real Prometheus scraping the agent, and its promtool
# (without the recommended exporters).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# A Python virtual environment with the `websockets` package, for the test
# that runs a backend speaking only the middleware's exchange,
# `prometheus_client`, whose parser checks the agent's metrics exposition,
# `gunicorn`, the real server behind the custom access_log_format test, and
# the ASGI servers a Cerberus backend runs on (a Django Channels consumer
# under daphne, uvicorn with each of its WebSocket implementations, and
# hypercorn), for the tests of messages a backend refuses. The app servers
# whose default access logs the agent reads (tests/samples/servers.sh) are
# here too: uWSGI (pyuwsgi, its binary wheel), granian, and cerberus-core,
# with which the expected events are computed. kubernetes-validate checks
# packaging/kubernetes/ against Kubernetes' own schemas.
venv=target/test-venv
if ! "$venv/bin/python" -c 'import websockets, prometheus_client, gunicorn, channels, daphne, uvicorn, wsproto, hypercorn, granian, pyuwsgi, cerberus_core, kubernetes_validate' >/dev/null 2>&1; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'websockets>=13,<16' 'prometheus_client>=0.20,<1' 'gunicorn==23.0.0' \
    'Django>=5.2,<5.3' 'channels==4.3.2' 'daphne==4.2.3' 'uvicorn==0.55.0' 'wsproto==1.3.2' \
    'hypercorn==0.18.0' 'granian==2.8.9' 'pyuwsgi==2.0.30.post1' 'cerberus-core==0.1.1' \
    'kubernetes-validate==1.37.0'
fi
