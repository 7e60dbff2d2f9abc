"""The operator's HTTP/2 log transport (``trainrun.kube.h2logs``) against a real HTTP/2 server over TLS in the
test process (the h2 library on the server side, a trustme certificate): streams share a connection, an
error status comes with its body, a connection lost mid-stream and a server without HTTP/2 are errors that
say so, and a reader that stops reading stops its stream (flow control), so nothing piles up in memory; a paced
reader takes what arrived at the pace's releases and at its stream's end. On asyncio's loop and on uvloop's (the
operator's)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trustme
import uvloop
from ports import free_port
from trainrun.kube.h2logs import PACED_WAKE_BYTES, STREAM_WINDOW, H2LogClient, Pace, StreamError

Handler = Callable[["Server", int, str], None]


@dataclass
class Server(asyncio.Protocol):
    """A minimal HTTP/2 server: ``handler(server, stream_id, path)`` answers each request."""

    handler: Handler
    connections: list[Server] = field(default_factory=list)
    max_streams: int | None = None  # SETTINGS_MAX_CONCURRENT_STREAMS it announces, if any
    transport: asyncio.Transport | None = None
    h2: h2.connection.H2Connection = field(
        default_factory=lambda: h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not derive from the class
        self.connections.append(self)
        self.h2.initiate_connection()
        if self.max_streams is not None:
            self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        self.flush()

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers)[":path"]
                self.handler(self, event.stream_id, str(path))
        self.flush()

    def respond(self, stream_id: int, status: int, *chunks: bytes, end: bool = True) -> None:
        self.h2.send_headers(stream_id, [(":status", str(status))])
        for chunk in chunks:
            self.h2.send_data(stream_id, chunk)
        if end:
            self.h2.end_stream(stream_id)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        self.transport.write(self.h2.data_to_send())


@pytest.fixture(scope="module")
def certificates() -> tuple[ssl.SSLContext, trustme.CA]:
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    return server, authority


async def serve(
    handler: Handler,
    certificates: tuple[ssl.SSLContext, trustme.CA],
    alpn: str = "h2",
    *,
    per_connection: int = 2,
    max_streams: int | None = None,
) -> tuple[H2LogClient, list[Server], asyncio.Server]:
    server_context, authority = certificates
    server_context.set_alpn_protocols([alpn])
    connections: list[Server] = []
    listening = await asyncio.get_running_loop().create_server(
        lambda: Server(handler, connections, max_streams), "127.0.0.1", 0, ssl=server_context
    )
    port = listening.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    client = H2LogClient(f"https://127.0.0.1:{port}", client_context, {"authorization": "Bearer t"}, per_connection=per_connection)
    return client, connections, listening


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_streams_share_a_connection_and_end_with_the_response(
    certificates: tuple[ssl.SSLContext, trustme.CA], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    def handler(server: Server, stream_id: int, path: str) -> None:
        server.respond(stream_id, 200, f"{path}\n".encode(), b"second line\n")

    async def scenario() -> tuple[list[bytes], int, int]:
        client, connections, listening = await serve(handler, certificates)
        bodies = await asyncio.gather(*(read_all(client.stream(f"/pods/p{n}/log", {"follow": "true"})) for n in range(3)))
        await client.close()
        listening.close()
        return bodies, len(connections), len(client.connections)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        bodies, opened, _ = runner.run(scenario())
    assert bodies == [f"/pods/p{n}/log?follow=true\nsecond line\n".encode() for n in range(3)]
    assert opened == 2  # two streams per connection here: three streams need two


def test_an_error_status_comes_with_the_servers_words(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    def handler(server: Server, stream_id: int, path: str) -> None:
        server.respond(stream_id, 404, b'{"message": "pods \\"x\\" not found"}')

    async def scenario() -> StreamError:
        client, _, listening = await serve(handler, certificates)
        with pytest.raises(StreamError) as raised:
            await read_all(client.stream("/pods/x/log", {}))
        await client.close()
        listening.close()
        return raised.value

    error = asyncio.run(scenario())
    assert error.status == 404 and "not found" in error.body


def test_a_connection_lost_mid_stream_is_an_error_not_an_end(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    def handler(server: Server, stream_id: int, path: str) -> None:
        server.respond(stream_id, 200, b"line 1\n", end=False)
        assert server.transport is not None
        asyncio.get_running_loop().call_later(0.05, server.transport.abort)

    async def scenario() -> tuple[list[bytes], StreamError]:
        client, _, listening = await serve(handler, certificates)
        got: list[bytes] = []
        with pytest.raises(StreamError) as raised:
            async for chunk in client.stream("/pods/x/log", {}):
                got.append(chunk)
        await client.close()
        listening.close()
        return got, raised.value

    got, error = asyncio.run(scenario())
    assert got == [b"line 1\n"] and error.status is None and "connection" in str(error)


def test_a_server_without_http2_is_named(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    async def scenario() -> StreamError:
        client, _, listening = await serve(lambda *_: None, certificates, alpn="http/1.1")
        with pytest.raises(StreamError) as raised:
            await read_all(client.stream("/pods/x/log", {}))
        await client.close()
        listening.close()
        return raised.value

    assert "HTTP/2" in str(asyncio.run(scenario()))


def test_a_reader_that_stops_reading_stops_its_stream(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    """Flow control is the reader's: the server cannot send more than the stream's window ahead of it."""
    block = b"x" * 16_000 + b"\n"
    sent: list[int] = []
    shut: list[int] = []  # the bytes sent so far, each time the server found the stream's window shut

    def handler(server: Server, stream_id: int, path: str) -> None:
        server.respond(stream_id, 200, end=False)

        def push() -> None:
            window = server.h2.local_flow_control_window(stream_id)
            if window < len(block):
                shut.append(sum(sent))
            while window >= len(block):
                server.h2.send_data(stream_id, block)
                sent.append(len(block))
                window -= len(block)
            server.flush()
            asyncio.get_running_loop().call_later(0.02, push)

        push()

    async def scenario() -> int:
        client, _, listening = await serve(handler, certificates)
        stream = client.stream("/pods/x/log", {})
        await stream.__anext__()  # read one chunk, then stop reading

        async def shut_ten_times_running() -> None:  # known later events: ten tries of the server, nothing sent
            while len(shut) < 10 or len(set(shut[-10:])) != 1:
                await asyncio.sleep(0.02)

        try:
            await asyncio.wait_for(shut_ten_times_running(), timeout=10)
        except TimeoutError:
            raise AssertionError(f"the server kept sending to a reader that stopped reading: {shut[-10:]}") from None
        before = sum(sent)
        assert shut[-1] == before
        taken = 0
        async for chunk in stream:  # reading again lets it go on
            taken += len(chunk)
            if taken > 2 * STREAM_WINDOW:
                break
        await stream.aclose()
        await client.close()
        listening.close()
        return before

    in_flight = asyncio.run(scenario())
    assert in_flight <= STREAM_WINDOW + 2 * len(block)


def test_streams_asking_while_the_server_is_unreachable_fail_at_once() -> None:
    """One failed connect answers the streams queued behind it for a moment (each retries after its own
    back-off) instead of each waiting out a connect timeout of its own."""

    async def scenario() -> tuple[list[str], float]:
        context = ssl.create_default_context()
        port = free_port()  # nothing listens on it
        client = H2LogClient(f"https://127.0.0.1:{port}", context, {}, per_connection=2)
        started = asyncio.get_running_loop().time()
        outcomes = await asyncio.gather(*(read_all(client.stream(f"/pods/p{n}/log", {})) for n in range(50)), return_exceptions=True)
        return [str(outcome) for outcome in outcomes], asyncio.get_running_loop().time() - started

    messages, elapsed = asyncio.run(scenario())
    assert all(message.startswith("cannot connect") for message in messages), messages[:3]
    assert elapsed < 5


@dataclass
class HeldOpen:
    """A server's side for the paced tests: each request answered 200 and kept open; the test sends on the first."""

    servers: list[tuple[Server, int]] = field(default_factory=list)

    def handler(self, server: Server, stream_id: int, path: str) -> None:
        server.respond(stream_id, 200, end=False)
        self.servers.append((server, stream_id))

    async def reader(self, client: H2LogClient, pace: Pace, got: list[bytes]) -> asyncio.Task[None]:
        """A task reading ``/pods/x/log`` paced into ``got``, once the server has its stream and the reader the
        response's headers."""

        async def read() -> None:
            async for chunk in client.stream("/pods/x/log", {}, pace):
                got.append(chunk)

        reader = asyncio.create_task(read())
        # Until the reader has the response's headers: data sent with them would wake it with the headers (taken
        # at once, a release or not), and the tests would depend on which read of the client brought what.
        while not self.servers or not all(stream.headers_seen for connection in client.connections for stream in connection.streams.values()):
            await asyncio.sleep(0.01)
        return reader

    async def send(self, *chunks: bytes, end: bool = False, pause: float = 0.02) -> None:
        """Each chunk in DATA frames of the largest size, then ``pause`` (each its own read); then the end."""
        server, stream_id = self.servers[0]
        for chunk in chunks:
            frame = server.h2.max_outbound_frame_size
            for start in range(0, len(chunk), frame):
                server.h2.send_data(stream_id, chunk[start : start + frame])
            server.flush()
            await asyncio.sleep(pause)
        if end:
            server.h2.end_stream(stream_id)
            server.flush()


async def stop(reader: asyncio.Task[None], client: H2LogClient, listening: asyncio.Server) -> None:
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await client.close()
    listening.close()


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_paced_reader_takes_what_arrived_at_each_release_in_one_piece(
    certificates: tuple[ssl.SSLContext, trustme.CA], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    held = HeldOpen()

    async def scenario() -> list[list[bytes]]:
        client, _, listening = await serve(held.handler, certificates)
        pace = Pace()
        got: list[bytes] = []
        moments: list[list[bytes]] = []
        reader = await held.reader(client, pace, got)
        await held.send(b"one\n", b"two\n", b"three\n")
        moments.append(list(got))  # nothing yet: no release
        pace.release()
        await asyncio.sleep(0)
        moments.append(list(got))  # taken before the releasing coroutine's next step
        await held.send(b"x" * (PACED_WAKE_BYTES // 2), b"y" * (PACED_WAKE_BYTES // 2 + 1))
        await asyncio.sleep(0.1)
        moments.append([chunk[:1] for chunk in got[1:]])  # that much wakes the reader without a release
        await held.send(b"last\n", end=True)
        await asyncio.wait_for(reader, timeout=5)  # its end wakes it, no release
        moments.append(got[2:])
        pace.stop()
        await stop(reader, client, listening)
        return moments

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        before, released, early, ended = runner.run(scenario())
    assert before == []
    assert released == [b"one\ntwo\nthree\n"]
    assert early == [b"x"]
    assert ended == [b"last\n"]


def test_only_a_stream_whose_data_waits_is_due_at_a_release_and_the_first_is_told(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    """A stream held open but quiet is not woken by a release (thousands of them cost nothing per interval), and
    the pace tells its owner once when data first waits (the follower's loop then ticks; it waits otherwise)."""
    held = HeldOpen()

    async def scenario() -> tuple[tuple[int, int], tuple[int, list[int]], tuple[int, list[bytes]]]:
        client, _, listening = await serve(held.handler, certificates)
        told: list[int] = []
        pace = Pace(on_due=lambda: told.append(len(pace.due)))
        got: list[bytes] = []
        reader = await held.reader(client, pace, got)
        await asyncio.sleep(0.05)
        quiet = (len(pace.due), len(told))
        await held.send(b"one\n", b"two\n")
        waiting = (len(pace.due), list(told))
        pace.release()
        await asyncio.sleep(0)
        released = (len(pace.due), list(got))
        await stop(reader, client, listening)
        return quiet, waiting, released

    quiet, waiting, released = asyncio.run(scenario())
    assert quiet == (0, 0)  # open, nothing sent: nothing to wake
    assert waiting == (1, [1])  # two chunks: due once, told once
    assert released == (0, [b"one\ntwo\n"])


def test_a_stopped_pace_hands_over_every_chunk_as_it_comes(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    held = HeldOpen()

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        client, _, listening = await serve(held.handler, certificates)
        pace = Pace()
        got: list[bytes] = []
        reader = await held.reader(client, pace, got)
        await held.send(b"held\n", pause=0.1)
        before_stop = list(got)
        pace.stop()  # releases what waits, and paces nothing from now on
        await asyncio.sleep(0.05)
        await held.send(b"at once\n", pause=0.1)
        await stop(reader, client, listening)
        return before_stop, got

    before_stop, got = asyncio.run(scenario())
    assert before_stop == []
    assert got == [b"held\n", b"at once\n"]


def test_a_connection_takes_at_most_four_fifths_of_the_streams_its_server_allows(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    """Streams closed here may still count at the server until it reads their reset: a new one is never refused."""

    async def scenario() -> list[int]:
        client, connections, listening = await serve(HeldOpen().handler, certificates, per_connection=100, max_streams=10)
        readers = [asyncio.create_task(read_all(client.stream("/pods/p0/log", {})))]
        while not connections or not connections[0].h2.open_inbound_streams:
            await asyncio.sleep(0.01)  # its SETTINGS have arrived by the time the server has the first stream
        readers += [asyncio.create_task(read_all(client.stream(f"/pods/p{n}/log", {}))) for n in range(1, 12)]
        while sum(len(connection.streams) for connection in client.connections) < 12:
            await asyncio.sleep(0.01)
        carried = [len(connection.streams) for connection in client.connections]
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await client.close()
        listening.close()
        return carried

    assert asyncio.run(scenario())[0] == 8  # 4/5 of 10; the rest on the next connection


def test_a_chunk_with_the_paces_mark_wakes_its_reader_at_once(certificates: tuple[ssl.SSLContext, trustme.CA]) -> None:
    held = HeldOpen()

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        client, _, listening = await serve(held.handler, certificates)
        got: list[bytes] = []
        reader = await held.reader(client, Pace(wake_on=b"trainrun:metric "), got)
        await held.send(b"plain\n", pause=0.1)
        quiet = list(got)
        await held.send(b'trainrun:metric {"loss": 1}\n', pause=0.1)
        await stop(reader, client, listening)
        return quiet, got

    quiet, got = asyncio.run(scenario())
    assert quiet == []
    assert got == [b'plain\ntrainrun:metric {"loss": 1}\n']  # with what waited before it, in one piece
