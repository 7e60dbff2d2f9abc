"""Followed pod logs over HTTP/2, many streams per connection, each connection one asyncio protocol.

Used by the operator's client (``trainrun.kube.aioclient.AsyncKube.log_batches``) for thousands of
followed logs at once. A general HTTP/2 client (httpx, which this replaced for logs) pays for every DATA
frame with a task wake-up per waiting stream, locks and cancel scopes (about 280 µs a frame here); this
module feeds the bytes the connection receives to the h2 state machine once and hands each stream's
data to its reader directly (its queue, one wake-up when it was waiting), so a frame costs what h2's
parsing costs. Flow control is the reader's: data is acknowledged when the reader takes it, so a reader
that stops reading (the follower waiting for its archive) stops its stream and no memory piles up.

A reader that needs its data only now and then (the follower ships each run's lines every few seconds) reads
*paced* (:class:`Pace`): its stream keeps what arrives and wakes it only at the pace's :meth:`~Pace.release`,
at its end, once ``PACED_WAKE_BYTES`` wait, or when a chunk carries the pace's ``wake_on`` mark (the follower's:
a metric line, which a sweep's pruner waits for); the reader then takes everything in one piece. At thousands
of quiet streams (a line or two a second each) that turns a wake-up and a pass through the reader's code per
chunk into one per release, and a release wakes only the readers whose streams hold data (a stream open but
silent costs nothing per release). Only over TLS (the API server's), with ALPN h2.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlencode, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

# How much a stream may have in flight before its reader takes it (the server stops sending past it).
STREAM_WINDOW = 1 << 20
CONNECT_TIMEOUT = 10.0
RECONNECT_PAUSE = 1.0  # after a failed connect, streams asking within this long fail without trying
# A paced stream wakes its reader before the release once this much waits (a chatty log is read as it comes).
PACED_WAKE_BYTES = 256 << 10


class StreamError(Exception):
    """The stream or its connection ended before the response did: ``status`` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class Pace:
    """When paced readers take their data: at each :meth:`release`, not at each chunk, until :meth:`stop`; at
    once for a chunk that holds ``wake_on``. Only a reader whose stream holds data is woken by a release (a
    stream held open but quiet costs nothing per release), and ``on_due`` is told when the first of them since
    the last release begins to wait (the follower then knows there is something to take at its next tick)."""

    def __init__(self, wake_on: bytes | None = None, on_due: Callable[[], None] | None = None) -> None:
        self.due: list[Callable[[], None]] = []  # how to wake each reader whose data waits for the release
        self.stopped = False
        self.wake_on = wake_on
        self.on_due = on_due

    def hold(self, wake: Callable[[], None]) -> None:
        """A paced reader's data waits: ``wake`` it at the next release."""
        self.due.append(wake)
        if len(self.due) == 1 and self.on_due is not None:
            self.on_due()

    def release(self) -> None:
        """Wake every paced reader whose data waits: each takes what its stream holds (they run before the
        caller's next ``await`` returns, in the order their data came)."""
        due, self.due = self.due, []
        for wake in due:
            wake()

    def stop(self) -> None:
        """From now on the readers take every chunk as it comes (the follower finishing: ends are awaited)."""
        self.stopped = True
        self.release()


@dataclass
class _Stream:
    """One request's response as it arrives: status, then data chunks, then its end."""

    stream_id: int
    pace: Pace | None = None
    status: int | None = None
    chunks: collections.deque[tuple[bytes, int]] = field(default_factory=collections.deque)
    held: int = 0  # bytes in chunks
    ended: bool = False
    error: StreamError | None = None
    waiter: asyncio.Future[None] | None = None
    headers_seen: bool = False  # the response's headers came, or the stream ended without them
    due: bool = False  # its data waits for the pace's release

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        """Until woken: by its headers, its end, a chunk (unless paced and little waits) or the pace's release."""
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def arrived(self, data: bytes, flow_length: int) -> None:
        """Keep a chunk; wake the reader unless it is paced and little waits."""
        self.chunks.append((data, flow_length))
        self.held += len(data)
        pace = self.pace
        if (
            pace is None
            or pace.stopped
            or self.held >= PACED_WAKE_BYTES
            or (pace.wake_on is not None and pace.wake_on in data)
        ):
            self.wake()
        elif not self.due:
            self.due = True
            pace.hold(self._released)

    def _released(self) -> None:
        self.due = False
        self.wake()

    def take_all(self) -> tuple[bytes, int]:
        """Every chunk held, in one piece, and their flow-controlled length."""
        chunks = self.chunks
        if len(chunks) == 1:
            data, flow_length = chunks.popleft()
        else:
            data = b"".join(chunk for chunk, _ in chunks)
            flow_length = sum(length for _, length in chunks)
            chunks.clear()
        self.held = 0
        return data, flow_length


class H2Connection(asyncio.Protocol):
    """One TLS connection to the API server carrying up to ``capacity`` streams."""

    def __init__(self, authority: str, headers: Mapping[str, str], capacity: int) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.authority = authority
        self.headers = dict(headers)
        self.capacity = capacity
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.closed: StreamError | None = None  # set once the connection is gone or going away

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without deriving from the class
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self._fail(StreamError("the API server did not agree to HTTP/2 (ALPN h2) for log streams"))
            transport.close()
            return
        self.h2.initiate_connection()
        self.h2.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW, h2.settings.SettingCodes.ENABLE_PUSH: 0}
        )
        self.h2.increment_flow_control_window(STREAM_WINDOW * self.capacity)  # the connection's own window
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail(StreamError(f"HTTP/2 protocol error: {error}"))
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self._on(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(StreamError(f"connection lost: {exc}" if exc else "connection closed by the server"))

    # ---- streams ----

    @property
    def accepting(self) -> bool:
        if self.closed is not None or self.transport is None or self.transport.is_closing():
            return False
        # Below the server's limit by a fifth: streams this side closed may still count there until it reads the reset.
        server_limit = self.h2.remote_settings.max_concurrent_streams
        limit = min(self.capacity, server_limit * 4 // 5) if server_limit else self.capacity
        return len(self.streams) < max(1, limit)

    def open(self, path: str, pace: Pace | None = None) -> _Stream:
        """Send a GET for ``path``; the stream's data arrives as the server sends it."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        headers += list(self.headers.items())
        self.h2.send_headers(stream_id, headers, end_stream=True)
        stream = self.streams[stream_id] = _Stream(stream_id, pace)
        self._flush()
        return stream

    def take(self, stream: _Stream, data: bytes, flow_length: int) -> None:
        """The reader took ``data``: let the server send that much more."""
        if flow_length and stream.stream_id in self.streams and self.closed is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # closed meanwhile: nothing to let through
                self.h2.acknowledge_received_data(flow_length, stream.stream_id)
            self._flush()

    def close_stream(self, stream: _Stream) -> None:
        """The reader is done: reset the stream if the server has not ended it."""
        if self.streams.pop(stream.stream_id, None) is not None and not stream.ended and self.closed is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # the server closed it meanwhile
                self.h2.reset_stream(stream.stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
            self._flush()

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:  # a stream its reader already left
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream.arrived(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers or []:
                    text = value.decode() if isinstance(value, bytes) else str(value)
                    if name in (":status", b":status") and text.isdigit():
                        stream.status = int(text)
                stream.headers_seen = True
                stream.wake()
        elif isinstance(event, h2.events.StreamEnded):
            self._end(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            self._end(event.stream_id, StreamError(f"the server reset the stream (error {event.error_code})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: streams it did not process end now; the others may finish, no new ones start.
            self.closed = StreamError(f"the server is closing the connection (error {event.error_code})")
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id in [key for key in self.streams if key > last]:
                self._end(stream_id, self.closed)

    def _end(self, stream_id: int, error: StreamError | None) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.ended, stream.error, stream.headers_seen = True, error, True
            stream.wake()

    def _fail(self, error: StreamError) -> None:
        self.closed = self.closed or error  # the first reason is the one that explains
        for stream in list(self.streams.values()):
            if not stream.ended:
                stream.ended, stream.error = True, self.closed
            stream.headers_seen = True
            stream.wake()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class H2LogClient:
    """Followed log streams to one API server over as few HTTP/2 connections as their number needs."""

    def __init__(self, server: str, context: ssl.SSLContext, headers: Mapping[str, str], *, per_connection: int) -> None:
        parts = urlsplit(server)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 443
        self.authority = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.context = context
        context.set_alpn_protocols(["h2"])
        self.headers = {key.lower(): value for key, value in headers.items()}
        self.per_connection = per_connection
        self.connections: list[H2Connection] = []
        self._connecting: asyncio.Lock | None = None
        self._failure: tuple[float, StreamError] | None = None  # (loop time, why) of the last failed connect

    async def _connection(self) -> H2Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection opened at a time: streams fill it before the next
            self.connections = [c for c in self.connections if c.closed is None or c.streams]
            for connection in self.connections:
                if connection.accepting:
                    return connection
            loop = asyncio.get_running_loop()
            if self._failure is not None and loop.time() - self._failure[0] < RECONNECT_PAUSE:
                # The server was just unreachable: the streams queued behind this lock fail at once and
                # retry after their back-off, instead of each waiting out its own connect timeout.
                raise self._failure[1]
            try:
                protocol = await self._connect(loop)
            except (OSError, TimeoutError, ssl.SSLError, StreamError) as error:
                why = error or type(error).__name__
                failure = error if isinstance(error, StreamError) else StreamError(f"cannot connect: {why}")
                self._failure = (loop.time(), failure)
                raise failure from None
            self._failure = None
            self.connections.append(protocol)
            return protocol

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> H2Connection:
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: H2Connection(self.authority, self.headers, self.per_connection),
                self.host,
                self.port,
                ssl=self.context,
                server_hostname=self.host,
            ),
            timeout=CONNECT_TIMEOUT,
        )
        if protocol.closed is not None:
            raise protocol.closed
        return protocol

    async def stream(self, path: str, query: Mapping[str, str], pace: Pace | None = None) -> AsyncIterator[bytes]:
        """The response body of a GET as it arrives (all that arrived since the last piece, in one piece; with
        ``pace``, at its releases); raises :class:`StreamError` for an error status or a stream or connection
        that ends early (a stream the server ends normally just stops)."""
        connection = await self._connection()
        stream = connection.open(f"{self.prefix}{path}?{urlencode(query)}", pace)
        try:
            while not stream.headers_seen:
                await stream.wait()
            if stream.status is not None and stream.status >= 400:
                body = b""
                async for chunk in self._chunks(connection, stream):
                    body += chunk
                raise StreamError(f"HTTP {stream.status}", stream.status, body.decode("utf-8", "replace"))
            async for chunk in self._chunks(connection, stream):
                yield chunk
        finally:
            connection.close_stream(stream)

    @staticmethod
    async def _chunks(connection: H2Connection, stream: _Stream) -> AsyncIterator[bytes]:
        while True:
            if stream.chunks:
                data, flow_length = stream.take_all()
                connection.take(stream, data, flow_length)
                yield data
                continue  # more may have come while the reader worked
            if stream.ended:
                if stream.error is not None:
                    raise stream.error
                return
            await stream.wait()

    async def close(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()
        self.connections = []
