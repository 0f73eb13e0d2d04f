"""The Restate side: per-key lanes, in-flight limits and rate limits, sending through the ingress
with one retry loop, replies, holds of blocked partitions and batches."""
