"""restate-kafka-bridge: turn Kafka records into Restate invocations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("restate-kafka-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
