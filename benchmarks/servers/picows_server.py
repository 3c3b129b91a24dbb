"""picows on uvloop (the fastest Python WebSocket library we know): transport.send to every subscriber.

Messages from a subscriber go to the latest publisher (the return path).  ``/pub/NAME`` and
``/sub/NAME`` do the same within channel ``NAME`` only (the capacity benchmark's sessions: one
publisher and its subscribers per channel); ``/pub`` and ``/sub`` are the channel ``""``."""

import asyncio

import uvloop
from picows import WSListener, WSMsgType, ws_create_server

from benchmarks.servers._common import MAX_MESSAGE_BYTES, parse_args, ready, server_ssl_context


class Channel:
    __slots__ = ("subscribers", "publishers")

    def __init__(self) -> None:
        self.subscribers = set()
        self.publishers = []  # the latest publisher last: it receives what subscribers send


def split_path(path: str) -> tuple:
    """``/pub/NAME`` -> ("pub", "NAME"); ``/sub`` -> ("sub", "")."""
    role, _, channel = path.split("?", 1)[0].lstrip("/").partition("/")
    return role, channel


async def main(args) -> None:
    channels = {}

    def channel_of(name: str) -> Channel:
        channel = channels.get(name)
        if channel is None:
            channel = channels[name] = Channel()
        return channel

    def forget_if_empty(name: str, channel: Channel) -> None:
        if not channel.subscribers and not channel.publishers:
            channels.pop(name, None)

    class Subscriber(WSListener):
        def __init__(self, name: str) -> None:
            self.name = name
            self.channel = channel_of(name)

        def on_ws_connected(self, transport):
            self.channel.subscribers.add(transport)

        def on_ws_disconnected(self, transport):
            self.channel.subscribers.discard(transport)
            forget_if_empty(self.name, self.channel)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.BINARY:
                publishers = self.channel.publishers
                if publishers:
                    publishers[-1].send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class Publisher(WSListener):
        def __init__(self, name: str) -> None:
            self.name = name
            self.channel = channel_of(name)

        def on_ws_connected(self, transport):
            self.channel.publishers.append(transport)

        def on_ws_disconnected(self, transport):
            if transport in self.channel.publishers:
                self.channel.publishers.remove(transport)
            forget_if_empty(self.name, self.channel)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.BINARY:
                payload = frame.get_payload_as_memoryview()
                for subscriber in self.channel.subscribers:
                    subscriber.send(WSMsgType.BINARY, payload)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request):
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        role, name = split_path(path)
        return Publisher(name) if role == "pub" else Subscriber(name)

    server = await ws_create_server(factory, args.host, args.port, max_frame_size=MAX_MESSAGE_BYTES,
                                    ssl=server_ssl_context(args))  # (--tls-cert: asyncio's TLS, benchmarks/tls.py)
    ready()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(parse_args(__doc__)))
