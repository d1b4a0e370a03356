"""The harness's HTTP client to services (emulators/service_http.py): a pooled connection is
reused while busy, and dropped once idle for IDLE_S, before a server's own keep-alive
timeout (gunicorn's 2 s) closes it under a request."""

from __future__ import annotations

import asyncio

from surgesim.emulators import service_http


async def _count_connections(gaps: list[float]) -> int:
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    http = service_http.session(5.0)
    try:
        for gap in [0.0, *gaps]:
            await asyncio.sleep(gap)
            assert await service_http.post_status(http, url, b"{}", {}) == 204
    finally:
        await http.close()
        server.close()
        await server.wait_closed()
    return accepted


def test_a_busy_connection_is_reused_and_an_idle_one_is_not():
    assert asyncio.run(_count_connections([0.1, 0.1, 0.1])) == 1
    # idle past IDLE_S (1 s), under gunicorn's 2 s: a new connection, not one the server may be closing
    assert asyncio.run(_count_connections([service_http.IDLE_S + 0.6])) == 2
