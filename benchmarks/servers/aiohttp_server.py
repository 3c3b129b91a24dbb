"""aiohttp on uvloop: each message is sent to every subscriber with send_bytes.

Messages from a subscriber go to the latest publisher (the return path)."""

import asyncio

import uvloop
from aiohttp import WSMsgType, web

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready


async def main(args) -> None:
    subscribers = set()
    publishers = []  # the latest publisher last: it receives what subscribers send

    async def handler(request):
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, compress=False, autoping=True)
        await ws.prepare(request)
        if request.path == "/pub":
            publishers.append(ws)
            try:
                async for message in ws:
                    if message.type == WSMsgType.BINARY:
                        for subscriber in list(subscribers):
                            await subscriber.send_bytes(message.data)
            finally:
                publishers.remove(ws)
            return ws
        subscribers.add(ws)
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY and publishers:
                    await publishers[-1].send_bytes(message.data)
        finally:
            subscribers.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/pub", handler)
    app.router.add_get("/sub", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    ready()
    await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(parse_args(__doc__)))
