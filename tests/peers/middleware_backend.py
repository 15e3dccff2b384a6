"""A backend that speaks only the middleware's exchange (cerberus-django):
each message is one event, and it answers every message once. Events are
appended to a JSON-lines file for the test to check.

Usage: middleware_backend.py PORT OUT_FILE   (listens on 127.0.0.1)
"""
import asyncio
import json
import sys

import websockets


async def main(port, out_path):
    out = open(out_path, "a", encoding="utf-8")

    async def handle(ws):
        async for message in ws:
            event = json.loads(message)
            out.write(json.dumps(event) + "\n")
            out.flush()
            await ws.send(json.dumps({"status": "received"}))

    async with websockets.serve(handle, "127.0.0.1", port):
        print("listening", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
