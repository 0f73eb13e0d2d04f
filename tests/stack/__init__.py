"""The real test stack: a Kafka-protocol broker, a Restate server and Python handlers.

Each piece is a plain class with ``start()``/``stop()`` so that pytest fixtures, benchmarks and the
demo can share it. Nothing here is mocked: every process is the real program on free loopback ports.
"""
