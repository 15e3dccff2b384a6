"""Send a fixed set of tricky requests to each server and write what each
log line must become.

For every request and server, the expectation is computed here, on the
client side, from what was sent and what came back, with Django (the
endpoint and query parameters the middleware would see) and the real
cerberus-core package (IP hashing, metrics sanitising). The Rust tests then
compare the agent's events with these files field by field.

Usage: recorder.py OUT_DIR NAME=HOST:PORT ...
"""
import base64
import http.client
import json
import re
import sys
import time
from datetime import datetime, timedelta, timezone
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

# Values that have broken log parsers: quotes, backslashes before quotes
# (gunicorn writes `"` as `\"` but leaves `\` alone, so `\\"` in its log is
# the value's own backslash and an escaped quote), a value ending in a
# backslash (then `\"` is the closing quote), tabs, non-ASCII text and lone
# non-UTF-8 bytes, long values. Each goes through every server; whatever a
# server refuses shows up as its status, never faked.
LONG = "L" * 2048
ADVERSARIAL = [
    ("GET", "/adv/quote", {"User-Agent": 'say "hi" now', "Referer": 'ref "q"'},
     {"metrics": '{"note":"caf\\u00e9 \\"quoted\\" \\\\ back","lang":"en"}'}),
    ("GET", "/adv/backslash-quote", {"User-Agent": 'back\\"slash', "Referer": 'r\\"'},
     {"metrics": '{"path":"C:\\\\dir\\\\","q":"\\"","nested":{"a":{"b":[1,"x\\\\\\""]}}}'}),
    ("GET", "/adv/two-backslashes", {"User-Agent": 'dbl\\\\"q\\\\', "Referer": "ends\\"},
     {"metrics": '{"m":"tail\\\\"}'}),
    ("GET", "/adv/trailing-backslash", {"User-Agent": "trailing\\", "Referer": "x\\"},
     {"metrics": '{"a":"x\\" \\"y"}'}),
    ("GET", "/adv/literal-hex", {"User-Agent": "lit \\x41 hex \\x22", "Referer": "\\x5C"},
     {"metrics": '{"a": "unterminated \\"}'}),
    ("GET", "/adv/tab", {"User-Agent": "tab\there\tand", "Referer": "a\tb"},
     {"metrics": '{"t":"a\\tb","u":"\\u0001"}'}),
    ("GET", "/adv/utf8", {"User-Agent": "Zürich 東京 bot".encode(), "Referer": "https://ex.com/café".encode()},
     {"metrics": '{"city":"Zürich"}'.encode()}),
    ("GET", "/adv/latin1-byte", {"User-Agent": b"caf\xe9 lone byte", "Referer": b"\xff"},
     {"metrics": b'{"n":"\xe9"}'}),
    ("GET", "/adv/long", {"User-Agent": LONG, "Referer": LONG},
     {"metrics": '{"long":"' + LONG + '"}'}),
    ("GET", "/adv/quote-space-quote", {"User-Agent": 'x" "y', "Referer": '\\" "'},
     {"metrics": '{"a":"\\" \\""}'}),
    ("GET", "/adv/invalid-json", {"User-Agent": "j"}, {"metrics": '{"a":1}\\'}),
    ("GET", "/q%22uote/%5Cback/%20sp/caf%C3%A9?x=%22&y=%5C&z=a%20b&w=caf%C3%A9", {"User-Agent": "p"}, {}),
    ("GET", '/raw"quote?a="b"', {"User-Agent": "p"}, {}),
    ("GET", "/raw\\back\\", {"User-Agent": "p"}, {}),
    ("GET", b"/raw-utf8/caf\xc3\xa9", {"User-Agent": "p"}, {}),
    ("GET", b"/raw-byte/\xff?q=\xe9", {"User-Agent": "p"}, {}),
    ("GET", "/user", {"User-Agent": "u", "Authorization": "Basic " + base64.b64encode(b'ann o\'neil [x] "q":pw').decode()}, {}),
]


def django_path(raw_path):
    return repercent_broken_unicode(unquote_to_bytes(raw_path)).decode()


def as_sent(value):
    """A header value as the client sent it, as text: UTF-8, invalid bytes
    replaced (what the agent must send; see CONTRACT.md)."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class RawConnection(http.client.HTTPConnection):
    """Sends the request line's bytes as given (a target passed as bytes may
    hold any byte), where http.client would insist on ASCII."""

    def _encode_request(self, request):
        return request.encode("latin-1")

    def _validate_path(self, url):
        pass


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
        parsed = json.loads(as_sent(header))
    except ValueError:
        return {}
    return sanitize_dict(parsed) if isinstance(parsed, dict) else {}


def send(host, port, method, target, headers, extra):
    conn = RawConnection(host, port, timeout=10)
    if isinstance(target, bytes):
        target = target.decode("latin-1")
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
    # http.client reads header values as latin-1: back to the bytes sent.
    metrics = resp.getheader("X-Cerberus-Metrics")
    seen = resp.getheader("X-Seen-Path")
    result = (resp.status, len(data), None if metrics is None else metrics.encode("latin-1"),
              None if seen is None else json.loads(seen))
    conn.close()
    return result


# What each server's default log holds, for the servers added with their
# own formats (the older ones are described inline below): user agent,
# bytes sent, response time, a time of its own, the query string, a path
# already decoded.
TRAITS = {
    "caddy": dict(ua=True, size=True, duration=True, time=True, query=True, decoded=False),
    "uwsgi": dict(ua=False, size=True, duration=True, time=True, query=True, decoded=False),
    "uvicorn": dict(ua=False, size=False, duration=False, time=False, query=True, decoded=False),
    "daphne": dict(ua=False, size="nonzero", duration=False, time=True, query=True, decoded=False),
    "hypercorn": dict(ua=True, size=False, duration=False, time=True, query=False, decoded=True),
    "granian": dict(ua=False, size=False, duration=True, time=True, query=False, decoded=True),
}

# Lines of a log that are requests, where the server writes its own
# messages to the same file.
ACCESS_LINE = {
    "uwsgi": re.compile(rb"^\[pid: "),
    "granian": re.compile(rb"^\[\d{4}-"),
}


def access_lines(out_dir, name):
    try:
        with open(f"{out_dir}/{name}.log", "rb") as f:
            lines = [line for line in f.read().split(b"\n") if line.strip()]
    except FileNotFoundError:
        return 0
    pattern = ACCESS_LINE.get(name)
    return sum(1 for line in lines if pattern is None or pattern.match(line))


def wait_for_line(out_dir, name, had, status):
    """How many access lines the request added to NAME.log: waits for one
    (servers log when the response is sent, not always before the client
    has it). Only a request answered 400, or not at all, may leave no line
    (the ASGI servers refuse it before their app sees it): for those the
    wait is short; any other must be logged, however busy the machine (a
    line given up on and logged late would be paired with the next
    request), within a bound that fails the recording loudly."""
    may_be_unlogged = status in (400, None)
    deadline = time.monotonic() + (1.5 if may_be_unlogged else 60)
    while True:
        now = access_lines(out_dir, name)
        if now > had:
            return now - had
        if time.monotonic() > deadline:
            if may_be_unlogged:
                return 0
            sys.exit(f"{name}: no access line for a request answered {status} within 60 s")
        time.sleep(0.01)


def expectation(name, method, path, query, headers, ua, ua_wsgi, status, size, metrics_seen, seen_path,
                client, before, after):
    traits = TRAITS.get(name)
    raw_ua = ua_wsgi if name == "json" else ua
    if traits is not None:
        if name == "caddy":
            # Caddy's JSON log holds a byte that is not UTF-8 as U+FFFD:
            # the byte itself is lost there.
            path = path.decode("utf-8", "replace").encode()
        if seen_path is not None and name != "caddy":
            endpoint = seen_path  # what Django saw under this server
        elif traits["decoded"]:
            endpoint = unquote_to_bytes(path).decode("utf-8", "replace")
        else:
            endpoint = django_path(path)
        if traits["size"] == "nonzero":
            bytes_sent = size or None
        else:
            bytes_sent = size if traits["size"] else None
        # hypercorn writes the referer and the user agent as they are, quotes
        # and all: `"a" "b" "c"` is one of three pairs, and no reader can
        # tell which. Such a user agent is not held against the agent.
        ambiguous = name == "hypercorn" and any(
            '" "' in (as_sent(v) or "") for v in (headers.get("Referer"), headers.get("User-Agent")))
        return {
            "ambiguous_user_agent": ambiguous,
            "method": method,
            "endpoint": endpoint,
            "query_params": django_query(query) if traits["query"] else None,
            "user_agent": (raw_ua or None) if traits["ua"] else None,
            "status": status,
            "bytes_sent": bytes_sent,
            "custom_data": {},
            "remote_addr": hash_pii(normalize_ip(client), SECRET),
            "time_from": before.isoformat(),
            "time_to": after.isoformat(),
            "has_duration": traits["duration"],
            "has_time": traits["time"],
        }
    if name.startswith("apache"):
        bytes_sent = size or None  # Apache's %b logs "-" for 0
    else:
        bytes_sent = size
    if (name.startswith("nginx") or name == "ingress_nginx") and status == 400:
        # nginx rejects the request line before reading headers.
        raw_ua = None
    metrics = metrics_seen
    if name == "json" and metrics is not None:
        # The app logs the header as WSGI gave it to it.
        metrics = metrics.decode("latin-1")
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
        "remote_addr": hash_pii(normalize_ip(client), SECRET),
        "time_from": before.isoformat(),
        "time_to": after.isoformat(),
        "has_duration": name in ("nginx_json", "gunicorn_cerberus", "json", "ingress_nginx"),
        "has_time": True,
    }
    if name == "nginx_json" and status == 400:
        # For a request it rejects, nginx logs an empty
        # $request_uri: there is no endpoint, the line must fail.
        expected = {"fails": True}
    return expected


def record(out_dir, files, counts, servers, requests):
    """Sends each request once to each server address in `servers`
    ((address, names)), writing the expectation of each line logged."""
    for method, target, headers, extra in requests:
        raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
        path, _, query = raw_target.partition(b"?")
        query = query.decode("utf-8", "replace")
        ua = headers.get("User-Agent")
        # The JSON log the app writes keeps header values as WSGI gives
        # them, latin-1 decoded (the agent cannot know better there).
        # gunicorn's own log holds the same text, which the agent decodes
        # back to the bytes sent.
        ua_wsgi = ua.decode("latin-1") if isinstance(ua, bytes) else ua
        for addr, names in servers:
            host, port = addr.rsplit(":", 1)
            host = host.strip("[]")
            # Servers stamp their lines with C's time(), which reads the
            # kernel's coarse clock: it can lag the precise one by a few
            # milliseconds, so a request sent at 12.001 may be logged 11.
            before = (datetime.now(timezone.utc) - timedelta(milliseconds=50)).replace(microsecond=0)
            try:
                status, size, metrics_seen, seen_path = send(host, int(port), method, target, headers, extra)
            except (http.client.RemoteDisconnected, ConnectionResetError):
                # The server hung up without an answer (uvicorn and hypercorn on
                # headers beyond their limit): nothing the app saw; whatever it
                # logged is a line the agent must not be expected to turn into
                # a particular event.
                status = None
            for name in names:
                if status is None:
                    added = wait_for_line(out_dir, name, counts[name], status)
                    counts[name] += added
                    print(f"{name}: no answer to {method} {target!r}; {added} lines", file=sys.stderr)
                    for _ in range(added):
                        files[name].write(json.dumps({"unanswered": True}) + "\n")
                    continue
                added = wait_for_line(out_dir, name, counts[name], status)
                if added > 1:
                    sys.exit(f"{name}: one request, {added} access lines")
                counts[name] += added
                if added == 0:
                    print(f"{name}: no line for {method} {target!r} ({status})", file=sys.stderr)
                    continue
                after = datetime.now(timezone.utc)
                expected = expectation(name, method, path, query, headers, as_sent(ua), ua_wsgi, status, size,
                                       metrics_seen, seen_path, host, before, after)
                files[name].write(json.dumps(expected, ensure_ascii=False) + "\n")
                files[name].flush()


def main():
    out_dir = sys.argv[1]
    # NAME=HOST:PORT[,[::1]:PORT]: every request goes to the first address,
    # the first few again to the second (an IPv6 client).
    servers = [(name, addrs.split(",")) for name, addrs in (a.split("=", 1) for a in sys.argv[2:])]
    files = {name: open(f"{out_dir}/{name}.expected.jsonl", "w", encoding="utf-8") for name, _ in servers}
    counts = {name: access_lines(out_dir, name) for name, _ in servers}
    by_addr = {}
    for name, addrs in servers:
        by_addr.setdefault(addrs[0], []).append(name)
    record(out_dir, files, counts, list(by_addr.items()), REQUESTS + ADVERSARIAL)
    by_v6 = {}
    for name, addrs in servers:
        if len(addrs) > 1:
            by_v6.setdefault(addrs[1], []).append(name)
    record(out_dir, files, counts, list(by_v6.items()), REQUESTS[:3] + ADVERSARIAL[:2])
    for f in files.values():
        f.close()


if __name__ == "__main__":
    main()
