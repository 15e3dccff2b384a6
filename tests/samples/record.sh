#!/usr/bin/env bash
# Records the access-log samples in this folder from real servers.
#
# Installs what servers.sh runs (nginx, Apache and Caddy from Debian's
# packages; gunicorn, uWSGI, uvicorn, daphne, hypercorn and granian with
# Django and cerberus-core from PyPI, in a throw-away virtual environment),
# runs it, and copies each server's log and expectations here. servers.sh
# says what runs and how each server logs; recorder.py what is sent and how
# the expected events are computed.
#
# Usage: tests/samples/record.sh [NAME...]   (as root, or with sudo for
# apt-get). With NAMEs, only those samples are written (the others keep
# their recording).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/cerberus-samples.XXXXXX)

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/apache2 ] || need_apt+=(apache2)
command -v caddy >/dev/null || need_apt+=(caddy)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q 'gunicorn==23.0.0' 'django>=5.2,<5.3' 'cerberus-core==0.1.1' \
  'uvicorn==0.55.0' 'daphne==4.2.3' 'hypercorn==0.18.0' 'granian==2.8.9' 'pyuwsgi==2.0.30.post1'

"$here/servers.sh" "$work/venv" "$work/logs"

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(nginx_combined nginx_json nginx_main ingress_nginx apache_combined apache_common
  apache_vhost_combined gunicorn gunicorn_cerberus json caddy uwsgi uvicorn daphne hypercorn granian)
for name in "${names[@]}"; do
  cp "$work/logs/$name.log" "$here/$name.log"
  cp "$work/logs/$name.expected.jsonl" "$here/$name.expected.jsonl"
done
echo "recorded into $here"
