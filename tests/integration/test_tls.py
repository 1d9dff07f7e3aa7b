"""TLS terminated by the web server itself (daphne -e ssl:..., uvicorn --ssl-*): every frame of the
fast frame path reaches a wss client through TLS, for sockets with and without permessage-deflate,
and a wss client that stops reading is still cut with 4408 (the transport's buffer is counted)."""

import datetime
import ipaddress
import json
import re
import socket
import ssl
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RUN, child_env
from tests.integration.test_backpressure import body
from tests.support import PYTHON, ChatSocket, Process, free_port, wait_until


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 made now, and its key, as PEM files; returns their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class TLSServer(Process):
    """daphne or uvicorn serving HTTPS and wss on 127.0.0.1 with the given certificate."""

    def __init__(self, server: str, cert: str, key: str, env: dict[str, str]) -> None:
        self.port = free_port()
        if server == "daphne":
            argv = [PYTHON, "-m", "daphne", "-e",
                    f"ssl:port={self.port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                    "config.asgi:application"]
        else:
            argv = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                    "--ssl-keyfile", key, "--ssl-certfile", cert, "config.asgi:application"]
        super().__init__(f"{server}-tls-{RUN}", argv, env)
        self.url = f"https://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(cafile=cert)

    def start(self) -> "TLSServer":
        super().start()

        def up():
            assert self.alive(), f"{self.name} exited:\n{self.log()[-3000:]}"
            try:
                return httpx.get(self.url + "/healthz", verify=self.context, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, 0.1, f"{self.name} to answer /healthz over TLS")
        return self


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


# A small buffer, so that a client that stops reading is cut after a few hundred KB.
BUFFER_BYTES = 131072


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def tls_server(request, certificate):
    server = TLSServer(request.param, *certificate, child_env(CHAT_SOCKET_BUFFER_BYTES=str(BUFFER_BYTES))).start()
    yield server
    server.stop()


@asynccontextmanager
async def wss(server: TLSServer, slug: str, cookie: str, *, compression: str | None, **options):
    """A wss client that trusts only the test certificate; waits for hello like support.chat_socket."""
    async with websockets.connect(f"wss://127.0.0.1:{server.port}/ws/chat/{slug}/", ssl=server.context,
                                  origin=server.url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                  compression=compression, max_size=None, open_timeout=10, **options) as ws:
        client = ChatSocket(ws)
        first = await client.recv()
        assert first["type"] == "hello", first
        yield client


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_frames_reach_a_wss_client_through_tls(tls_server, worker, alice, bob, room, compression):
    async with wss(tls_server, room.slug, alice.cookie, compression=compression) as a, \
            wss(tls_server, room.slug, bob.cookie, compression=compression) as b:
        sent = {}
        for n in range(20):  # sent back to back: the hub hands them on together, one write for several
            client_id = uuid.uuid4().hex
            sent[client_id] = f"over TLS {n} " + "x" * (n * 150)
            await a.send({"type": "message.send", "body": sent[client_id], "client_id": client_id})
        seen = await b.messages(20)
        acks = [await a.recv_type("ack") for _ in range(20)]
        assert [m["body"] for m in seen] == list(sent.values())
        assert [m["seq"] for m in seen] == sorted(m["seq"] for m in seen)
        assert {ack["client_id"]: ack["seq"] for ack in acks} == {m["client_id"]: m["seq"] for m in seen}
        own = [f for f in a.frames if f["type"] == "message"]
        assert [m["body"] for m in own] == list(sent.values())  # the sender's own copies, too
        await b.send({"type": "ping"})
        await b.recv_type("pong")


def cuts(server: TLSServer) -> float:
    text = httpx.get(f"{server.url}/metrics", verify=server.context, timeout=5).text
    found = re.search(r"^chat_slow_consumer_cuts_total ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_wss_client_that_stops_reading_is_cut_with_4408(tls_server, worker, alice, bob, room):
    before = cuts(tls_server)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", tls_server.port))
    async with wss(tls_server, room.slug, alice.cookie, compression=None, sock=raw, max_queue=1) as slow, \
            wss(tls_server, room.slug, bob.cookie, compression=None) as b:
        flooded = 0
        while cuts(tls_server) == before:  # ~4 KB frames until the server gives up on the slow client
            assert flooded < 5000, f"no cut after {flooded} frames of ~4 KB"  # it comes after ~1000
            for _ in range(100):
                await b.send({"type": "message.send", "body": body(), "client_id": uuid.uuid4().hex})
            await b.messages(100)
            flooded += 100
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frame = json.loads(await slow.ws.recv())  # the backlog, still decodable, then the close
                assert frame["type"] in ("message", "presence", "ack", "typing"), frame
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
