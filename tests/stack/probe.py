"""Readiness probe shared by the brokers: a real Kafka Metadata request, not just an open port."""

from __future__ import annotations

import asyncio
import logging


async def _metadata(bootstrap_servers: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    try:
        await admin.start()
        brokers = (await admin.describe_cluster())["brokers"]
        return len(brokers) > 0
    finally:
        await admin.close()


def kafka_metadata_ready(bootstrap_servers: str) -> bool:
    """True once the broker answers a Metadata request listing at least one broker."""
    # refused connections are expected while the broker boots: keep them out of test reports
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(_metadata(bootstrap_servers), 5))
    finally:
        client_log.setLevel(level)
