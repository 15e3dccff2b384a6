"""A Cerberus backend as a Django project would write it: a Channels consumer
(AsyncWebsocketConsumer) served by a real ASGI server (daphne, uvicorn,
hypercorn), each with its own message size limit and its own way of refusing
a message that is too big.

It speaks the agent's batch exchange, or the middleware's `single` one
(each message one event, each answered once). Stored events are appended to
a JSON-lines file for the test to check.

Environment:
  CERBERUS_PEER_OUT        file the stored events are appended to
  CERBERUS_PEER_WIRE       "batch" (default) or "single"
  CERBERUS_PEER_SKIP_EVERY with "single": silently drop every Nth message
                           (stores nothing, answers nothing), as a backend
                           that drops what it cannot handle

Run, for example:
  daphne --fd 3 channels_backend:application
  uvicorn --fd 3 --ws-max-size 65536 channels_backend:application
"""
import json
import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={},
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402

OUT = os.environ["CERBERUS_PEER_OUT"]
WIRE = os.environ.get("CERBERUS_PEER_WIRE", "batch")
SKIP_EVERY = int(os.environ.get("CERBERUS_PEER_SKIP_EVERY", "0"))

# Counts messages across connections (one worker process).
received = 0


def store(events):
    with open(OUT, "a", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")


class IngestConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        global received
        received += 1
        message = json.loads(text_data if text_data is not None else bytes_data)
        if WIRE == "batch":
            store(message["events"])
            await self.send(json.dumps({"type": "ack", "seq": message["seq"]}))
            return
        if SKIP_EVERY and received % SKIP_EVERY == 0:
            return
        store([message])
        await self.send(json.dumps({"status": "received"}))


async def http(scope, receive, send):
    """Anything but a WebSocket: 404 (the servers probe nothing, but be
    complete)."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


application = ProtocolTypeRouter(
    {"websocket": IngestConsumer.as_asgi(), "http": http, "lifespan": http}
)
