#!/usr/bin/env bash
# Records the access-log samples in this folder from real servers.
#
# Starts, on 127.0.0.1 only: nginx (Debian package) and Apache httpd
# (Debian package) as reverse proxies in front of a gunicorn upstream, and
# two more gunicorns logging the default and the cerberus access formats
# directly. The WSGI app (app.py) also writes a JSON access log. recorder.py
# sends the same tricky requests to each server and writes, per log line,
# the event the agent must produce (computed with Django and cerberus-core).
#
# Usage: tests/samples/record.sh [NAME...]   (as root, or with sudo for
# apt-get). With NAMEs, only those samples are written (the others keep
# their recording).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/cerberus-samples.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; [ -f "$work/httpd.pid" ] && kill "$(cat "$work/httpd.pid")" 2>/dev/null; true' EXIT

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/apache2 ] || need_apt+=(apache2)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q 'gunicorn==23.0.0' 'django>=5,<6' 'cerberus-core==0.1.1'

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_UP=$(port); P_NGINX=$(port); P_APACHE=$(port); P_G1=$(port); P_G2=$(port); P_J=$(port)
export PYTHONPATH="$here"
GUNI="$work/venv/bin/gunicorn --workers 1 app:application"

$GUNI --bind "127.0.0.1:$P_UP" &
$GUNI --bind "127.0.0.1:$P_G1" --access-logfile "$work/gunicorn.log" &
$GUNI --bind "127.0.0.1:$P_G2" --access-logfile "$work/gunicorn_cerberus.log" \
  --access-logformat '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s "%({x-cerberus-metrics}o)s"' &
JSON_LOG="$work/json.log" $GUNI --bind "127.0.0.1:$P_J" &

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
    set \$proxy_upstream_name "default-app-80";
    set \$proxy_alternative_upstream_name "";
    set \$req_id \$request_id;
    location / { proxy_pass http://127.0.0.1:$P_UP; }
  }
}
NGINX
/usr/sbin/nginx -c "$work/nginx.conf"

mods=/usr/lib/apache2/modules
cat > "$work/httpd.conf" <<APACHE
ServerRoot $work
PidFile $work/httpd.pid
ErrorLog $work/apache-error.log
Listen 127.0.0.1:$P_APACHE
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

for p in $P_UP $P_NGINX $P_APACHE $P_G1 $P_G2 $P_J; do
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$p),0.2)" 2>/dev/null && break
    sleep 0.1
  done
done

"$work/venv/bin/python" "$here/recorder.py" "$work" \
  "nginx_combined=127.0.0.1:$P_NGINX" "nginx_json=127.0.0.1:$P_NGINX" "nginx_main=127.0.0.1:$P_NGINX" \
  "ingress_nginx=127.0.0.1:$P_NGINX" \
  "apache_combined=127.0.0.1:$P_APACHE" "apache_common=127.0.0.1:$P_APACHE" \
  "apache_vhost_combined=127.0.0.1:$P_APACHE" \
  "gunicorn=127.0.0.1:$P_G1" "gunicorn_cerberus=127.0.0.1:$P_G2" "json=127.0.0.1:$P_J"
sleep 1  # let servers flush their logs

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(nginx_combined nginx_json nginx_main ingress_nginx apache_combined apache_common
  apache_vhost_combined gunicorn gunicorn_cerberus json)
for name in "${names[@]}"; do
  cp "$work/$name.log" "$here/$name.log"
  cp "$work/$name.expected.jsonl" "$here/$name.expected.jsonl"
done
echo "recorded into $here"
