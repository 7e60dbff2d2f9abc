"""The operator's TLS connections read into small buffers (``trainrun.kube.aioclient.use_small_tls_read_buffers``).

asyncio allocates each TLS connection's read buffer whole as it opens; the setting is a class attribute of its
SSLProtocol, so this test also notices a Python whose asyncio no longer reads it (the buffer would be 256 KiB
again, 10 MB of the operator's heap at 300 runs)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl

import pytest
from trainrun.kube.aioclient import TLS_READ_BUFFER_BYTES, use_small_tls_read_buffers


def read_buffer_of_a_new_connection() -> int:
    async def opened() -> int:
        loop = asyncio.get_running_loop()
        protocol = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), loop.create_future(), server_hostname="api")
        return len(protocol._ssl_buffer)  # type: ignore[attr-defined]

    return asyncio.run(opened())


def test_connections_opened_after_it_read_into_buffers_of_the_chosen_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)  # restored after
    assert read_buffer_of_a_new_connection() == 256 * 1024
    use_small_tls_read_buffers()
    assert read_buffer_of_a_new_connection() == TLS_READ_BUFFER_BYTES < 256 * 1024
