"""A TCP proxy on 127.0.0.1 that holds every chunk a client sends for a fixed delay before
passing it on, so that a local S3 server answers as one a round trip away would.

    python3 benches/latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Used by benches/s3-metadata.sh (this kernel has no `tc netem`). Answers pass unheld: one
delay per request is one round trip.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    try:
        while data := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main(listen, target, delay):
    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            pipe(client_reader, server_writer, delay),
            pipe(server_reader, client_writer, 0),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_port, target_port, delay_ms = (int(arg) for arg in sys.argv[1:4])
    asyncio.run(main(listen_port, target_port, delay_ms / 1000))
