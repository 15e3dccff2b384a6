"""A backend written with Python's `websockets`, as the Cerberus backend is:
it speaks the middleware's exchange (cerberus-django: each message is one
event, every message answered once) or, with --wire batch, the agent's batch
exchange (docs/protocol.md). Events are appended to a JSON-lines file for the
test to check; each connection's negotiated terms are appended to
OUT_FILE.connections, one line per connection ("permessage-deflate
client_max_window_bits=N client_no_context_takeover=True|False", the
window and reset the backend's zlib inflates the agent's messages with; or
"none").

`websockets` accepts permessage-deflate by default (with its own defaults:
context takeover, and 12-bit windows where the offer lets it ask for
them); --no-compression refuses it, as a server built without it would.

--client-window-bits N, --client-no-context-takeover: accept
permessage-deflate only on these terms for what the agent sends (an offer
that does not let the backend name a window is declined, as websockets'
`require_client_max_window_bits` does; the answer names the terms; the
backend's zlib inflates with that window and resets after every message,
so an agent that compressed otherwise fails here).

--bomb-first: on the first connection, before anything else, send one
message of 200 MiB of zeros (about 200 KiB once compressed): a hostile
backend's "deflate bomb".

Usage: middleware_backend.py PORT OUT_FILE [--wire single|batch] [--no-compression] [--bomb-first]
       [--client-window-bits N] [--client-no-context-takeover]
(listens on 127.0.0.1)
"""
import argparse
import asyncio
import json

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


async def main(a):
    out = open(a.out_file, "a", encoding="utf-8")
    connections = open(a.out_file + ".connections", "a", encoding="utf-8")

    bombed = []

    async def handle(ws):
        names = [
            f"{ext.name} client_max_window_bits={ext.remote_max_window_bits}"
            f" client_no_context_takeover={ext.remote_no_context_takeover}"
            for ext in ws.protocol.extensions
        ] or ["none"]
        connections.write(",".join(names) + "\n")
        connections.flush()
        if a.bomb_first and not bombed:
            bombed.append(True)
            await ws.send(b"\0" * (200 << 20))
        async for message in ws:
            if a.wire == "batch":
                batch = json.loads(message)
                for event in batch["events"]:
                    out.write(json.dumps(event) + "\n")
                out.flush()
                await ws.send(json.dumps({"type": "ack", "seq": batch["seq"]}))
            else:
                event = json.loads(message)
                out.write(json.dumps(event) + "\n")
                out.flush()
                await ws.send(json.dumps({"status": "received"}))

    compression = None if a.no_compression else "deflate"
    terms = {}
    if a.client_window_bits or a.client_no_context_takeover:
        compression = None
        terms["extensions"] = [ServerPerMessageDeflateFactory(
            client_max_window_bits=a.client_window_bits,
            client_no_context_takeover=a.client_no_context_takeover,
            server_max_window_bits=12,
            require_client_max_window_bits=a.client_window_bits is not None,
        )]
    async with serve(handle, "127.0.0.1", a.port, compression=compression, **terms):
        print("listening", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out_file")
    ap.add_argument("--wire", choices=["single", "batch"], default="single")
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument("--bomb-first", action="store_true")
    ap.add_argument("--client-window-bits", type=int)
    ap.add_argument("--client-no-context-takeover", action="store_true")
    asyncio.run(main(ap.parse_args()))
