"""Kafka edges: the embedded broker, topic names and small produce/consume helpers."""
