"""trio-websocket broadcast server (the trio baseline): each message is sent to every subscriber in turn.

Messages from a subscriber go to the latest publisher (the return path)."""

import trio
from trio_websocket import ConnectionClosed, serve_websocket

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready

RECEIVE_BUFFER_BYTES = 64 * 1024  # the library's default is 4 KiB, which halves large-message throughput


async def main(args) -> None:
    subscribers = set()
    publishers = []  # the latest publisher last: it receives what subscribers send

    async def handler(request):
        ws = await request.accept()
        if request.path == "/pub":
            publishers.append(ws)
            try:
                while True:
                    message = await ws.get_message()
                    for subscriber in list(subscribers):
                        try:
                            await subscriber.send_message(message)
                        except ConnectionClosed:
                            subscribers.discard(subscriber)
            except ConnectionClosed:
                return
            finally:
                publishers.remove(ws)
        subscribers.add(ws)
        try:
            while True:
                message = await ws.get_message()
                if publishers:
                    try:
                        await publishers[-1].send_message(message)
                    except ConnectionClosed:
                        pass
        except ConnectionClosed:
            subscribers.discard(ws)

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_websocket(
            handler, args.host, args.port, None, max_message_size=MAX_MESSAGE_BYTES,
            receive_buffer_size=RECEIVE_BUFFER_BYTES, task_status=task_status))
        ready()


if __name__ == "__main__":
    trio.run(main, parse_args(__doc__))
