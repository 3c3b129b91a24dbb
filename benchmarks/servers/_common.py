"""Argument parsing shared by the peer servers."""

import argparse

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # above the largest benchmark message (5 MiB) with room


def parse_args(description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve wss:// only (with --tls-key)")
    parser.add_argument("--tls-key", default=None)
    return parser.parse_args()


def server_ssl_context(args):
    """The stdlib's server defaults (as relay's own: TLS 1.2 or later, ALPN http/1.1), or None."""
    if not args.tls_cert:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def ready() -> None:
    print("READY", flush=True)
