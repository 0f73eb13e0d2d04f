"""What the bridge produces to Kafka: dead letters, replies and records the operator skipped."""
