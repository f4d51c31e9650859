"""Which incarnation of a topic a stream position belongs to: Kafka's topic id.

Offsets identify a record only within one topic's life: a topic deleted and created again (a wiped
Kafka, a re-created connector) starts again at offset 0 under a new topic id. The Delta history marks
the offsets it holds per incarnation (stores/history/delta.py), so it asks here.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from core.errors import TransientError


class TopicIds:
    """Topic name -> Kafka topic id, asked of the cluster once per topic and process."""

    def __init__(self, kafka: dict[str, Any], timeout_s: float = 15.0) -> None:
        self._admin = AdminClient(kafka)  # Settings.kafka_client()
        self._timeout_s = timeout_s
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, topic: str) -> str:
        with self._lock:
            known = self._ids.get(topic)
            if known is not None:
                return known
            futures = self._admin.describe_topics(TopicCollection([topic]), request_timeout=self._timeout_s)
            try:
                described = futures[topic].result(timeout=self._timeout_s)
            except (KafkaException, TimeoutError) as exc:
                raise TransientError(
                    f"cannot read the id of topic {topic} from Kafka: {exc}",
                    "the batch is retried; check `featurectl stack status`",
                ) from None
            self._ids[topic] = str(described.topic_id)
            return self._ids[topic]
