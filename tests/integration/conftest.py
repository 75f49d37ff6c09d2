"""Real database servers for the integration tests, started from pip packages on free local ports.

Each server is session-scoped and started on first use; its module says how it is started.
"""

from servers_mongo_chroma import *  # noqa: F403
from servers_pg_redis import *  # noqa: F403
