"""A tiny WSGI app for recording access-log samples.

The client steers each response with request headers: X-Want-Status (the
status code), X-Want-Bytes (body length), X-Want-Metrics (echoed back as the
X-Cerberus-Metrics response header). With JSON_LOG set, the app also writes
its own JSON access log line per request, as many Python apps do.
"""
import json
import os
import time
from urllib.parse import quote
from datetime import datetime, timezone

REASONS = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found", 500: "Internal Server Error"}


def application(environ, start_response):
    started = time.monotonic()
    status = int(environ.get("HTTP_X_WANT_STATUS", "200"))
    size = 0 if status == 204 else int(environ.get("HTTP_X_WANT_BYTES", "5"))
    body = b"x" * size
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(size))]
    metrics = environ.get("HTTP_X_WANT_METRICS")
    if metrics is not None:
        headers.append(("X-Cerberus-Metrics", metrics))
    start_response(f"{status} {REASONS.get(status, 'Unknown')}", headers)
    json_log = os.environ.get("JSON_LOG")
    if json_log:
        try:
            custom = json.loads(metrics) if metrics is not None else None
        except ValueError:
            custom = metrics
        line = {
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ["REQUEST_METHOD"],
            # The target as sent, non-ASCII and quotes percent-encoded, as
            # Django's request.get_full_path() gives it.
            "path": quote(environ.get("RAW_URI", "/").encode("latin-1"), safe="/?&=%:@!$'()*+,;~"),
            "status": status,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "bytes_sent": size,
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "custom_data": custom,
        }
        with open(json_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return [body]
