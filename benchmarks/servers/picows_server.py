"""picows on uvloop (the fastest Python WebSocket library we know): transport.send to every subscriber.

Messages from a subscriber go to the latest publisher (the return path)."""

import asyncio

import uvloop
from picows import WSListener, WSMsgType, ws_create_server

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready


async def main(args) -> None:
    subscribers = set()
    publishers = []  # the latest publisher last: it receives what subscribers send

    class Subscriber(WSListener):
        def on_ws_connected(self, transport):
            subscribers.add(transport)

        def on_ws_disconnected(self, transport):
            subscribers.discard(transport)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.BINARY:
                if publishers:
                    publishers[-1].send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class Publisher(WSListener):
        def on_ws_connected(self, transport):
            publishers.append(transport)

        def on_ws_disconnected(self, transport):
            if transport in publishers:
                publishers.remove(transport)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.BINARY:
                payload = frame.get_payload_as_memoryview()
                for subscriber in subscribers:
                    subscriber.send(WSMsgType.BINARY, payload)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request):
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        return Publisher() if path == "/pub" else Subscriber()

    server = await ws_create_server(factory, args.host, args.port, max_frame_size=MAX_MESSAGE_BYTES)
    ready()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(parse_args(__doc__)))
