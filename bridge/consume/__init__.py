"""The Kafka side: the consumer group, fetching with flow control, the partition book (one owner
of every partition's state), planning fetched records and committing what finished."""
