"""Run the Faust worker in this process until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

from collarstream.config import Settings
from collarstream.stream.topics import TopicNames, ensure_topics


def run_worker(settings: Settings) -> None:
    from faust.worker import Worker

    from collarstream.stream.app import build_app

    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS: the worker needs a broker address")
    # Topics first, with our partition count: Faust would otherwise declare them itself
    # and a producer's auto-create could race it with another count.
    ensure_topics(
        settings.bootstrap_servers,
        TopicNames(settings.topic_prefix),
        partitions=settings.partitions,
    )
    app = build_app(settings)
    logging.getLogger("faust").setLevel(settings.log_level.upper())
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
