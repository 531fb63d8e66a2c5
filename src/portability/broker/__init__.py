"""The Kafka side: the embedded broker, topic creation, client construction, the rebalance
listener every consumer group uses."""

from portability.broker.admin import ensure_topics
from portability.broker.clients import KafkaClients, stop_consumer
from portability.broker.embedded import EmbeddedBroker, free_port, tansu_binary
from portability.broker.errors import BrokerError, bounded
from portability.broker.rebalance import RebalanceListener

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "KafkaClients",
    "RebalanceListener",
    "bounded",
    "ensure_topics",
    "free_port",
    "stop_consumer",
    "tansu_binary",
]
