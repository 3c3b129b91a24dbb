"""Config's field metadata is the one source of names, help, checks and defaults."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import relay._fastpath as fast_twin
import relay._purepath as pure_twin
from relay import Client, ClientConnection, serve_echo
from relay._cli import build_parser
from relay._config import (
    CHECK,
    DEFAULT_ECHO_LISTEN,
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PING_INTERVAL_S,
    HELP,
    MiB,
    Config,
    ConfigError,
)


def test_every_default_limit_has_one_value():
    defaults = Config()
    assert DEFAULT_MAX_MESSAGE_BYTES == defaults.max_message_bytes == 16 * MiB
    # The twins keep their own constant so that each imports standalone; they must agree with Config.
    assert fast_twin.DEFAULT_MAX_MESSAGE_BYTES == pure_twin.DEFAULT_MAX_MESSAGE_BYTES == DEFAULT_MAX_MESSAGE_BYTES
    assert inspect.signature(pure_twin.FrameDecoder).parameters["max_message_size"].default == DEFAULT_MAX_MESSAGE_BYTES

    echo = inspect.signature(serve_echo).parameters
    assert echo["listen"].default == DEFAULT_ECHO_LISTEN
    assert echo["max_message_bytes"].default == defaults.max_message_bytes
    assert echo["ping_interval_s"].default == defaults.ping_interval_s == DEFAULT_PING_INTERVAL_S
    assert echo["idle_timeout_s"].default == defaults.idle_timeout_s == DEFAULT_IDLE_TIMEOUT_S
    assert defaults.max_header_bytes == DEFAULT_MAX_HEADER_BYTES
    assert defaults.handshake_timeout_s == DEFAULT_HANDSHAKE_TIMEOUT_S

    for method in (Client.connect, ClientConnection.open):
        assert inspect.signature(method).parameters["max_message_bytes"].default == DEFAULT_MAX_MESSAGE_BYTES

    echo_args = build_parser().parse_args(["echo"])
    assert (echo_args.listen, echo_args.max_message_bytes) == (DEFAULT_ECHO_LISTEN, DEFAULT_MAX_MESSAGE_BYTES)


def test_settings_and_hooks_come_from_the_metadata():
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(Config.setting_names()) | set(Config.hook_names()) == set(fields)
    assert not set(Config.setting_names()) & set(Config.hook_names())
    assert Config.hook_names() == ["authorize_join", "on_session_created", "on_session_ended", "on_message"]
    for name, f in fields.items():
        assert f.metadata[HELP].strip() or name in Config.hook_names(), f"{name} has no help"
        if name.endswith(("_bytes", "_s")) and name in Config.setting_names():
            assert f.metadata.get(CHECK) in ("positive", "non_negative"), f"{name} has no range check"
    with pytest.raises(ConfigError, match="unknown setting.*on_message"):
        Config.from_mapping({"on_message": "print"})


def test_range_checks_come_from_the_metadata():
    for f in dataclasses.fields(Config):
        check = f.metadata.get(CHECK)
        if check is None:
            continue
        with pytest.raises(ConfigError, match=f"^{f.name} must"):
            Config.from_mapping({f.name: -1})
        if check == "positive":
            with pytest.raises(ConfigError, match=f"^{f.name} must be positive"):
                Config.from_mapping({f.name: 0})
        else:
            assert getattr(Config.from_mapping({f.name: 0}), f.name) == 0


def test_cli_defaults_differ_only_where_the_metadata_says():
    config, cli = Config(), Config.cli_defaults()
    different = {f.name for f in dataclasses.fields(Config) if getattr(config, f.name) != getattr(cli, f.name)}
    assert different == {"tune_malloc"} and cli.tune_malloc is True
