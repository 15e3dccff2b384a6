#!/usr/bin/env bash
# Runs every server whose access log the agent knows, on 127.0.0.1 and ::1
# only, each logging as its package or documentation shows, sends them the
# same tricky requests (recorder.py) and writes into OUT_DIR, per server,
# NAME.log (what the server wrote) and NAME.expected.jsonl (the event the
# agent must make of each line, computed on the client side with Django and
# cerberus-core).
#
# Usage: tests/samples/servers.sh VENV OUT_DIR
#   VENV: a Python virtual environment with gunicorn, Django, cerberus-core,
#   uvicorn, daphne, hypercorn, granian and pyuwsgi (tests/setup.sh makes
#   target/test-venv). nginx, Apache and Caddy come from Debian's packages.
# Used by record.sh (the samples in this folder) and by the test that runs
# the agent on what the real servers write (tests/suite/samples.rs).
#
# The servers log in the server's local time where their format has no
# zone (daphne, uWSGI): run with TZ set to check that the agent reads it so.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$(cd "$1" && pwd)
work=$(mkdir -p "$2" && cd "$2" && pwd)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  [ -f "$work/httpd.pid" ] && kill "$(cat "$work/httpd.pid")" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
start() { "$@" & pids+=($!); }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port6() { python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0)); print(s.getsockname()[1])'; }
P_UP=$(port); P_NGINX=$(port); P_APACHE=$(port); P_G1=$(port); P_G2=$(port); P_J=$(port)
P_CADDY=$(port); P_UWSGI=$(port); P_UVICORN=$(port); P_DAPHNE=$(port); P_HYPERCORN=$(port); P_GRANIAN=$(port)
V6_NGINX=$(port6); V6_APACHE=$(port6); V6_G1=$(port6); V6_CADDY=$(port6); V6_UWSGI=$(port6)
V6_UVICORN=$(port6); V6_DAPHNE=$(port6); V6_HYPERCORN=$(port6); V6_GRANIAN=$(port6)
export PYTHONPATH="$here"
GUNI="$venv/bin/gunicorn --workers 1 app:application"

start $GUNI --bind "127.0.0.1:$P_UP"
start $GUNI --bind "127.0.0.1:$P_G1" --bind "[::1]:$V6_G1" --access-logfile "$work/gunicorn.log"
start $GUNI --bind "127.0.0.1:$P_G2" --access-logfile "$work/gunicorn_cerberus.log" \
  --access-logformat '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s "%({x-cerberus-metrics}o)s"'
start env JSON_LOG="$work/json.log" $GUNI --bind "127.0.0.1:$P_J"

# The Python app servers, each serving the Django app (django_app.py) and
# logging as its documentation shows: uWSGI with --logto (its own messages
# in the same file), uvicorn's and granian's stdout into a file, daphne's
# --access-log, hypercorn's --access-logfile. Where a server takes one
# address, a second instance serves ::1 and appends to the same file.
for a in "127.0.0.1:$P_UWSGI" "[::1]:$V6_UWSGI"; do
  start "$venv/bin/uwsgi" --http "$a" --module django_app:application --master --processes 1 \
    --logto "$work/uwsgi.log"
done
start sh -c "exec '$venv/bin/uvicorn' django_app:asgi --host 127.0.0.1 --port $P_UVICORN >> '$work/uvicorn.log'"
start sh -c "exec '$venv/bin/uvicorn' django_app:asgi --host ::1 --port $V6_UVICORN >> '$work/uvicorn.log'"
start "$venv/bin/daphne" -e "tcp:port=$P_DAPHNE:interface=127.0.0.1" -e "tcp:port=$V6_DAPHNE:interface=\\:\\:1" \
  --access-log "$work/daphne.log" django_app:asgi
start "$venv/bin/hypercorn" --bind "127.0.0.1:$P_HYPERCORN" --bind "[::1]:$V6_HYPERCORN" \
  --access-logfile "$work/hypercorn.log" django_app:asgi
start sh -c "exec '$venv/bin/granian' --interface asgi --host 127.0.0.1 --port $P_GRANIAN --workers 1 --access-log django_app:asgi >> '$work/granian.log'"
start sh -c "exec '$venv/bin/granian' --interface asgi --host ::1 --port $V6_GRANIAN --workers 1 --access-log django_app:asgi >> '$work/granian.log'"

# Caddy (Debian's package) as a reverse proxy, its access log to a file.
cat > "$work/Caddyfile" <<CADDY
{
  admin off
  auto_https off
  storage file_system $work/caddy-data
}
http://127.0.0.1:$P_CADDY, http://[::1]:$V6_CADDY {
  log {
    output file $work/caddy.log
  }
  reverse_proxy 127.0.0.1:$P_UP
}
CADDY
start env XDG_CONFIG_HOME="$work" XDG_DATA_HOME="$work" caddy run --config "$work/Caddyfile" --adapter caddyfile

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
  log_format cerberus_json escape=json '{"remote_addr":"\$remote_addr","time_iso8601":"\$time_iso8601","request_method":"\$request_method","request_uri":"\$request_uri","uri":"\$uri","args":"\$args","scheme":"\$scheme","server_protocol":"\$server_protocol","status":"\$status","body_bytes_sent":"\$body_bytes_sent","request_time":"\$request_time","http_referer":"\$http_referer","http_user_agent":"\$http_user_agent","upstream_http_x_cerberus_metrics":"\$upstream_http_x_cerberus_metrics"}';
  # nginx.org's and RHEL's nginx.conf declare this one and log with it.
  log_format main '\$remote_addr - \$remote_user [\$time_local] "\$request" '
                  '\$status \$body_bytes_sent "\$http_referer" '
                  '"\$http_user_agent" "\$http_x_forwarded_for"';
  # ingress-nginx's default (its Lua-set variables set here by hand).
  log_format upstreaminfo '\$remote_addr - \$remote_user [\$time_local] "\$request" '
    '\$status \$body_bytes_sent "\$http_referer" "\$http_user_agent" '
    '\$request_length \$request_time [\$proxy_upstream_name] '
    '[\$proxy_alternative_upstream_name] \$upstream_addr '
    '\$upstream_response_length \$upstream_response_time \$upstream_status \$req_id';
  access_log $work/nginx_combined.log combined;
  access_log $work/nginx_main.log main;
  access_log $work/ingress_nginx.log upstreaminfo;
  access_log $work/nginx_json.log cerberus_json;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  server {
    listen 127.0.0.1:$P_NGINX;
    listen [::1]:$V6_NGINX;
    set \$proxy_upstream_name "default-app-80";
    set \$proxy_alternative_upstream_name "";
    set \$req_id \$request_id;
    location / { proxy_pass http://127.0.0.1:$P_UP; }
  }
}
NGINX
/usr/sbin/nginx -c "$work/nginx.conf" -e "$work/nginx-error.log"

mods=/usr/lib/apache2/modules
cat > "$work/httpd.conf" <<APACHE
ServerRoot $work
PidFile $work/httpd.pid
ErrorLog $work/apache-error.log
Listen 127.0.0.1:$P_APACHE
Listen [::1]:$V6_APACHE
ServerName localhost
LoadModule mpm_event_module $mods/mod_mpm_event.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule proxy_module $mods/mod_proxy.so
LoadModule proxy_http_module $mods/mod_proxy_http.so
User www-data
Group www-data
LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"" combined
LogFormat "%h %l %u %t \"%r\" %>s %b" common
# Debian's vhost_combined (other_vhosts_access.log), with %b for %O as in
# combined above (%O counts the headers too, which the client cannot know).
LogFormat "%v:%p %h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"" vhost_combined
CustomLog $work/apache_combined.log combined
CustomLog $work/apache_common.log common
CustomLog $work/apache_vhost_combined.log vhost_combined
AllowEncodedSlashes NoDecode
ProxyPass "/" "http://127.0.0.1:$P_UP/" nocanon
APACHE
/usr/sbin/apache2 -f "$work/httpd.conf" -k start

wait_port() {  # HOST PORT: up to 30 s, then fail loudly
  for _ in $(seq 300); do
    python3 -c "import socket; socket.create_connection(('$1',$2),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "servers.sh: nothing listens on $1 port $2" >&2
  exit 1
}
for p in $P_UP $P_NGINX $P_APACHE $P_G1 $P_G2 $P_J $P_CADDY $P_UWSGI $P_UVICORN $P_DAPHNE $P_HYPERCORN $P_GRANIAN; do
  wait_port 127.0.0.1 "$p"
done
for p in $V6_NGINX $V6_APACHE $V6_G1 $V6_CADDY $V6_UWSGI $V6_UVICORN $V6_DAPHNE $V6_HYPERCORN $V6_GRANIAN; do
  wait_port ::1 "$p"
done

"$venv/bin/python" "$here/recorder.py" "$work" \
  "nginx_combined=127.0.0.1:$P_NGINX,[::1]:$V6_NGINX" "nginx_json=127.0.0.1:$P_NGINX,[::1]:$V6_NGINX" \
  "nginx_main=127.0.0.1:$P_NGINX,[::1]:$V6_NGINX" "ingress_nginx=127.0.0.1:$P_NGINX,[::1]:$V6_NGINX" \
  "apache_combined=127.0.0.1:$P_APACHE,[::1]:$V6_APACHE" "apache_common=127.0.0.1:$P_APACHE,[::1]:$V6_APACHE" \
  "apache_vhost_combined=127.0.0.1:$P_APACHE,[::1]:$V6_APACHE" \
  "gunicorn=127.0.0.1:$P_G1,[::1]:$V6_G1" "gunicorn_cerberus=127.0.0.1:$P_G2" "json=127.0.0.1:$P_J" \
  "caddy=127.0.0.1:$P_CADDY,[::1]:$V6_CADDY" "uwsgi=127.0.0.1:$P_UWSGI,[::1]:$V6_UWSGI" \
  "uvicorn=127.0.0.1:$P_UVICORN,[::1]:$V6_UVICORN" "daphne=127.0.0.1:$P_DAPHNE,[::1]:$V6_DAPHNE" \
  "hypercorn=127.0.0.1:$P_HYPERCORN,[::1]:$V6_HYPERCORN" "granian=127.0.0.1:$P_GRANIAN,[::1]:$V6_GRANIAN"

