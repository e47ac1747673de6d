"""A WebSocket client for the activator's tests (python `websockets`): connects to ADDR (ip:port)
asking for ws://HOST/ws (so its Host header names HOST), sends a text message of SIZE bytes and
prints whether the echo matched.

Usage: websocket_client.py ADDR HOST SIZE
"""

import asyncio
import sys

from websockets.asyncio.client import connect


async def main(addr, host, size):
    ip, port = addr.rsplit(":", 1)
    message = "x" * size
    url = f"ws://{host}:{port}/ws"
    async with connect(url, host=ip, port=int(port), max_size=None) as socket:
        await socket.send(message)
        echo = await socket.recv()
        print("match" if echo == message else f"mismatch: {len(echo)} bytes")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
