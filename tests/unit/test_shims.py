"""Each server shim is active on the pinned upstream versions; on any other it logs one warning and
leaves the server's own path whole (config/shims.py)."""

import logging
import re

import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from config import daphne_backpressure, daphne_close_codes, daphne_listen, shims, uvicorn_frames
from tests.support import ROOT

# What each shim's install() replaces, and the flag that makes a second install() a no-op.
PATCHES = {
    daphne_close_codes: [(WebSocketProtocol, "serverClose"), (WebSocketProtocol, "handle_reply")],
    daphne_backpressure: [(Server, "create_application"), (WebSocketProtocol, "serverClose")],
    uvicorn_frames: [(WebSocketsSansIOProtocol, "run_asgi")],
}
FLAGS = {
    daphne_close_codes: (WebSocketProtocol, "_chat_close_codes"),
    daphne_backpressure: (Server, "_chat_backpressure"),
    uvicorn_frames: (WebSocketsSansIOProtocol, "_chat_frames"),
}
SHIMS = list(PATCHES)
EVERY_PACKAGE = [(shim, package) for shim in SHIMS for package in shim.WRITTEN_FOR]


def shim_id(value):
    return value.__name__.rpartition(".")[2] if hasattr(value, "WRITTEN_FOR") else None


@pytest.fixture(autouse=True)
def upstream(monkeypatch):
    """Every test starts from the servers' own classes, and whatever it installs is undone after."""
    for shim in SHIMS:
        for cls, name in PATCHES[shim]:
            assert cls.__dict__[name].__module__ == cls.__module__, f"{cls.__name__}.{name} patched before the test"
            monkeypatch.setattr(cls, name, cls.__dict__[name])
        cls, flag = FLAGS[shim]
        monkeypatch.setattr(cls, flag, False, raising=False)  # deleted again after the test
    monkeypatch.setattr(uvicorn_frames, "_OPEN", uvicorn_frames._OPEN)
    monkeypatch.setattr(shims, "_verdicts", {})


def found_instead(monkeypatch, package: str, version: str | None) -> None:
    installed = shims.upstream_version
    monkeypatch.setattr(shims, "upstream_version", lambda name: version if name == package else installed(name))


def shim_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "config.shims" and r.levelno == logging.WARNING]


def test_each_shim_is_written_for_the_versions_pinned_and_installed():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#]+)", (ROOT / "requirements.txt").read_text(),
                           re.MULTILINE))
    pins = {name.lower(): version for name, version in pins.items()}
    for shim in SHIMS:
        for package, expected in shim.WRITTEN_FOR.items():
            assert shims.upstream_version(package) == expected, f"{shim.__name__}: {package}"
            if package in pins:
                assert pins[package] == expected, f"{shim.__name__}: {package} is pinned at {pins[package]}"


@pytest.mark.parametrize("shim", SHIMS, ids=shim_id)
def test_on_the_pinned_versions_install_puts_the_shim_in_place(shim, caplog):
    assert shim.install() is True
    for cls, name in PATCHES[shim]:
        assert cls.__dict__[name].__module__ == shim.__name__, f"{cls.__name__}.{name} is not the shim's"
    installed = {(cls, name): cls.__dict__[name] for cls, name in PATCHES[shim]}
    assert shim.install() is True  # a second call changes nothing (no wrapper around the wrapper)
    assert {(cls, name): cls.__dict__[name] for cls, name in PATCHES[shim]} == installed
    assert shim_warnings(caplog) == []


@pytest.mark.parametrize(("shim", "package"), EVERY_PACKAGE, ids=lambda v: shim_id(v) or v)
def test_on_another_version_install_warns_once_and_leaves_the_server_alone(shim, package, monkeypatch, caplog):
    upstream = {(cls, name): cls.__dict__[name] for cls, name in PATCHES[shim]}
    found_instead(monkeypatch, package, "0.0.1")
    assert shim.install() is False
    assert {(cls, name): cls.__dict__[name] for cls, name in PATCHES[shim]} == upstream
    assert not getattr(*FLAGS[shim])
    [warning] = shim_warnings(caplog)
    assert shim.__name__ in warning and f"{package} 0.0.1 (written for {shim.WRITTEN_FOR[package]})" in warning


def test_a_missing_package_counts_as_another_version(monkeypatch, caplog):
    found_instead(monkeypatch, "websockets", None)
    assert uvicorn_frames.install() is False
    assert WebSocketsSansIOProtocol.__dict__["run_asgi"].__module__ == WebSocketsSansIOProtocol.__module__
    [warning] = shim_warnings(caplog)
    assert "websockets not installed (written for 17.4)" in warning


def test_the_lookup_reads_installed_metadata():
    assert shims.upstream_version("daphne") == "4.2.3"
    assert shims.upstream_version("no-such-package-here") is None


@pytest.mark.parametrize(("given", "listened"), [
    ("tcp:port=8000:interface=127.0.0.1", "tcp:port=8000:interface=127.0.0.1:backlog=4096"),
    ("ssl:8443:privateKey=k.pem:certKey=c.pem", "ssl:8443:privateKey=k.pem:certKey=c.pem:backlog=4096"),
    ("tcp:port=8000:backlog=64", "tcp:port=8000:backlog=64"),  # the operator's own stands
    ("unix:/run/chat.sock", "unix:/run/chat.sock"),
])
def test_daphne_listens_with_the_backlog_unless_the_endpoint_names_one(given, listened):
    assert daphne_listen.with_backlog(given) == listened
