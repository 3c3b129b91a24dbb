"""Argument parsing shared by the peer servers."""

import argparse

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # above the largest benchmark message (5 MiB) with room


def parse_args(description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args()


def ready() -> None:
    print("READY", flush=True)
