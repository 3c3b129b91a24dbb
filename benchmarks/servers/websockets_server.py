"""websockets (asyncio API) on uvloop: broadcast() writes each message to every subscriber.

Messages from a subscriber go to the latest publisher (the return path)."""

import asyncio

import uvloop
from websockets.asyncio.server import broadcast, serve

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready


async def main(args) -> None:
    subscribers = set()
    publishers = []  # the latest publisher last: it receives what subscribers send

    async def handler(ws):
        if ws.request.path == "/pub":
            publishers.append(ws)
            try:
                async for message in ws:
                    broadcast(subscribers, message)
            finally:
                publishers.remove(ws)
            return
        subscribers.add(ws)
        try:
            async for message in ws:
                if publishers:
                    await publishers[-1].send(message)
        finally:
            subscribers.discard(ws)

    async with serve(handler, args.host, args.port, max_size=MAX_MESSAGE_BYTES, compression=None,
                     ping_interval=None, max_queue=None, write_limit=MAX_MESSAGE_BYTES):
        ready()
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(parse_args(__doc__)))
