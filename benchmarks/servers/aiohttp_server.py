"""aiohttp on uvloop: each message is sent to every subscriber with send_bytes."""

import asyncio

import uvloop
from aiohttp import WSMsgType, web

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready


async def main(args) -> None:
    subscribers = set()

    async def handler(request):
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, compress=False, autoping=True)
        await ws.prepare(request)
        if request.path == "/pub":
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    for subscriber in list(subscribers):
                        await subscriber.send_bytes(message.data)
            return ws
        subscribers.add(ws)
        try:
            async for _message in ws:
                pass
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
