"""Send a fixed set of tricky requests to each server and write what each
log line must become.

For every request and server, the expectation is computed here, on the
client side, from what was sent and what came back, with Django (the
endpoint and query parameters the middleware would see) and the real
cerberus-core package (IP hashing, metrics sanitising). The Rust tests then
compare the agent's events with these files field by field.

Usage: recorder.py OUT_DIR NAME=HOST:PORT ...
"""
import http.client
import json
import sys
import time
from datetime import datetime, timezone
from urllib.parse import unquote_to_bytes

import django
from django.conf import settings

settings.configure(DEFAULT_CHARSET="utf-8")
django.setup()
from django.http import QueryDict  # noqa: E402
from django.utils.encoding import repercent_broken_unicode  # noqa: E402
from cerberus_core.sanitization import (  # noqa: E402
    REDACTED, SENSITIVE_KEYS, hash_pii, normalize_ip, sanitize_dict)

SECRET = "sample-secret"

# (method, target, headers, extra) — extra: status, bytes, metrics
REQUESTS = [
    ("GET", "/", {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
                  "Referer": "https://example.com/start?x=1"},
     {"metrics": '{"items_processed": 3, "cache_hit": true}'}),
    ("GET", "/caf%C3%A9/men%C3%BC?lang=de&q=a+b&lang=fr", {"User-Agent": 'Agent "quoted" v1'}, {}),
    ("GET", "/path%20with%20spaces/%FF?token=secret123&x=1&x=2", {"User-Agent": "Back\\slash\\agent"},
     {"metrics": '{"user": {"password": "p", "id": 7}, "token": "t", "ok": [1, {"cvv": 123}]}'}),
    ("POST", "/api/items?password=hunter2", {"User-Agent": "poster/1.0", "Content-Type": "application/json"},
     {"status": 201, "bytes": 17, "body": b'{"name": "item"}'}),
    ("GET", "/missing", {}, {"status": 404, "bytes": 9}),
    ("GET", "/unicode-ua", {"User-Agent": "Caf\u00e9Bot/1.0".encode("utf-8")}, {}),
    ("DELETE", "/items/42?", {"User-Agent": "deleter"}, {"status": 204}),
    ("GET", "/metrics-bad", {"User-Agent": "m"}, {"metrics": "{not json"}),
    ("GET", "/metrics-list", {"User-Agent": "m"}, {"metrics": "[1, 2]"}),
    ("GET", "/%2e%2e/a%2Fb", {"User-Agent": "dots"}, {}),
    ("PUT", "/empty-query?&&", {"User-Agent": "", "Referer": 'https://r.example/"q"'}, {"status": 200, "bytes": 0}),
    ("GET", "/unicode-metrics", {"User-Agent": "m"}, {"metrics": '{"city": "Z\\u00fcrich", "n": 1.5}'}),
]


def django_path(raw_path):
    return repercent_broken_unicode(unquote_to_bytes(raw_path)).decode()


def django_query(raw_query):
    """cerberus_django.middleware._extract_query_params over QueryDict."""
    get = QueryDict(raw_query)
    if not get:
        return None
    params = {}
    for key in get:
        if key.lower() in SENSITIVE_KEYS:
            params[key] = REDACTED
        else:
            values = get.getlist(key)
            params[key] = values[0] if len(values) == 1 else values
    return params


def metrics_expectation(header):
    if header is None:
        return {}
    try:
        parsed = json.loads(header)
    except ValueError:
        return {}
    return sanitize_dict(parsed) if isinstance(parsed, dict) else {}


def send(host, port, method, target, headers, extra):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest(method, target, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if "status" in extra:
        conn.putheader("X-Want-Status", str(extra["status"]))
    if "bytes" in extra:
        conn.putheader("X-Want-Bytes", str(extra["bytes"]))
    if "metrics" in extra:
        conn.putheader("X-Want-Metrics", extra["metrics"])
    body = extra.get("body")
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    result = (resp.status, len(data), resp.getheader("X-Cerberus-Metrics"))
    conn.close()
    return result


def main():
    out_dir = sys.argv[1]
    servers = [a.split("=", 1) for a in sys.argv[2:]]
    files = {name: open(f"{out_dir}/{name}.expected.jsonl", "w", encoding="utf-8") for name, _ in servers}
    for method, target, headers, extra in REQUESTS:
        path, _, query = target.partition("?")
        ua = headers.get("User-Agent")
        ua_text = ua.decode("utf-8") if isinstance(ua, bytes) else ua
        # gunicorn (and the JSON log the app writes) keep header bytes as
        # WSGI gives them: latin-1 decoded, as the middleware would see them.
        ua_wsgi = ua.decode("latin-1") if isinstance(ua, bytes) else ua
        by_addr = {}
        for name, addr in servers:
            by_addr.setdefault(addr, []).append(name)
        for addr, names in by_addr.items():
            host, port = addr.rsplit(":", 1)
            before = datetime.now(timezone.utc).replace(microsecond=0)
            status, size, metrics_seen = send(host, int(port), method, target, headers, extra)
            time.sleep(0.002)
            after = datetime.now(timezone.utc)
            for name in names:
                raw_ua = ua_wsgi if name.startswith(("gunicorn", "json")) else ua_text
                if name.startswith("apache"):
                    bytes_sent = size or None  # Apache's %b logs "-" for 0
                else:
                    bytes_sent = size
                if name.startswith("nginx") and status == 400:
                    # nginx rejects the request line before reading headers.
                    raw_ua = None
                metrics = metrics_seen
                if name not in ("nginx_json", "gunicorn_cerberus", "json"):
                    metrics = None  # the format has no metrics field
                if name == "apache_common":
                    raw_ua = None  # the format has no user agent
                expected = {
                    "method": method,
                    "endpoint": django_path(path),
                    "query_params": django_query(query),
                    "user_agent": raw_ua or None,
                    "status": status,
                    "bytes_sent": bytes_sent,
                    "custom_data": metrics_expectation(metrics),
                    "remote_addr": hash_pii(normalize_ip("127.0.0.1"), SECRET),
                    "time_from": before.isoformat(),
                    "time_to": after.isoformat(),
                    "has_duration": name in ("nginx_json", "gunicorn_cerberus", "json"),
                }
                if name == "nginx_json" and status == 400:
                    # For a request it rejects, nginx logs an empty
                    # $request_uri: there is no endpoint, the line must fail.
                    expected = {"fails": True}
                files[name].write(json.dumps(expected, ensure_ascii=False) + "\n")
    for f in files.values():
        f.close()


if __name__ == "__main__":
    main()
