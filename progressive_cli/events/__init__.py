"""The event bus (``bus``): durable publish/subscribe with per-subscription positions, a retry queue
and a dead-letter queue, all in the state store."""
