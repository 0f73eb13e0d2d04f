"""The two Kafka-protocol brokers of the stack behind one shape, chosen by name."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

BROKERS = ("tansu", "apache-kafka")


class Broker(Protocol):
    name: str

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self) -> None: ...


class BrokerUnavailable(RuntimeError):
    """This machine cannot run the broker (no Java 17+ or Maven); the message says why."""


def make_broker(name: str, workdir: Path) -> Broker:
    """An unstarted broker called ``name`` (one of :data:`BROKERS`) working in ``workdir``."""
    if name == "tansu":
        from .tansu import TansuBroker

        return TansuBroker(workdir)
    if name != "apache-kafka":
        raise ValueError(f"unknown broker {name!r}; choose one of {', '.join(BROKERS)}")
    from . import apache_kafka

    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        raise BrokerUnavailable(reason)
    return apache_kafka.ApacheKafkaBroker(workdir)
