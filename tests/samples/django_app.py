"""A one-view Django app, served by the Python app servers whose default
access logs are recorded (uWSGI over WSGI; uvicorn, daphne, hypercorn and
granian over ASGI).

The client steers each response as with app.py (X-Want-Status,
X-Want-Bytes, X-Want-Metrics). Every response says, in X-Seen-Path, the
`request.path` Django saw (JSON, so any text travels as ASCII): what the
middleware would send as the endpoint under that server.
"""
import json

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="samples-only",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DEFAULT_CHARSET="utf-8",
    )
    django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import re_path  # noqa: E402


def view(request, rest=""):
    status = int(request.headers.get("X-Want-Status", "200"))
    size = 0 if status == 204 else int(request.headers.get("X-Want-Bytes", "5"))
    response = HttpResponse(b"x" * size, status=status, content_type="text/plain")
    metrics = request.META.get("HTTP_X_WANT_METRICS")
    if metrics is not None:
        response.headers["X-Cerberus-Metrics"] = metrics
    response.headers["X-Seen-Path"] = json.dumps(request.path)
    return response


urlpatterns = [re_path(r"^(?P<rest>.*)$", view)]

application = get_wsgi_application()
asgi = get_asgi_application()
