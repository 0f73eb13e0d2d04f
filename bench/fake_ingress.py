"""A stand-in for Restate's ingress that accepts every ``/send`` at once, for ``bench.hotpath``.

    .venv/bin/python -m bench.fake_ingress PORT

Raw asyncio protocol, HTTP/1.1 keep-alive: reads each request's head and ``Content-Length``
body, answers ``202`` with a fixed ``{"invocationId", "status": "Accepted"}`` body, and counts the
requests (``GET /count`` answers the number; ``GET /services``, a fixed admin API listing).
Costs a few microseconds per request, so that a bridge's CPU can be measured without Restate's
(about 1 ms per record) on the same cores.
"""

from __future__ import annotations

import asyncio
import json
import sys

ACCEPTED = b'{"invocationId":"inc_1fjx0nU7DK1Y4qQhdNH9mQsHv3YM9VFDT7","status":"Accepted"}'
RESPONSE = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(ACCEPTED), ACCEPTED)
)


SCHEMA = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer", "minimum": 0},
        "key": {"type": "string"},
        "amount": {"type": "integer", "minimum": 0},
        "note": {"type": "string", "maxLength": 200},
    },
    "required": ["seq", "key", "amount"],
}
"""What ``bench.hotpath --validate-input`` checks each record's value against: the shape of
``bench.bridge.records``, as an SDK would publish it."""
SERVICES = json.dumps(
    {
        "services": [
            {
                "name": "Recorder",
                "ty": "VirtualObject",
                "public": True,
                "idempotency_retention": "1d",
                "handlers": [
                    {
                        "name": "record",
                        "ty": "Exclusive",
                        "public": True,
                        "input_json_schema": SCHEMA,
                    }
                ],
            }
        ]
    }
).encode()


class Counter:
    sends = 0


class Ingress(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            if head.startswith("GET /services"):  # the admin API, for --validate-input
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(SERVICES), SERVICES)
                )
            elif head.startswith("GET /count"):
                body = str(Counter.sends).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
            else:
                Counter.sends += 1
                self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Ingress, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
