"""The pure core: values and decisions, no I/O.

No module here imports asyncio, aiohttp, aiokafka or sockets (``tests/test_layout.py`` fails if
one does): records and their coordinates, routing a record to invocations, offsets and the commit
watermark, batching, the operator's controls as data, rate limits, templates, durations.
"""
