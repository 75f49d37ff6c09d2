"""integrations.yaml: external HTTP APIs and databases."""


from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from progressive_cli.config.common import Backoff, Duration, EnvStr, Identifier, Model, empty_list

ERROR_KINDS = ("API_ERROR", "RATE_LIMITED", "CIRCUIT_BREAKER_OPEN", "NETWORK_ERROR", "TIMEOUT")
ErrorKind = Literal["API_ERROR", "RATE_LIMITED", "CIRCUIT_BREAKER_OPEN", "NETWORK_ERROR", "TIMEOUT"]


def _kinds(*kinds: ErrorKind) -> list[ErrorKind]:
    return list(kinds)


# --- auth -------------------------------------------------------------------------------------------
class NoAuth(Model):
    type: Literal["none"]


class ApiKeyAuth(Model):
    type: Literal["api_key"]
    in_: Literal["query", "header"] = Field("header", alias="in")
    """Send the key as a query parameter or a header."""
    name: str
    """Parameter or header name, e.g. `api_key` or `X-API-Key`."""
    value: EnvStr


class BearerAuth(Model):
    type: Literal["bearer"]
    token: EnvStr


class BasicAuth(Model):
    type: Literal["basic"]
    username: EnvStr
    password: EnvStr


class HeadersAuth(Model):
    type: Literal["headers"]
    headers: dict[str, EnvStr] = Field(min_length=1)


class OAuth2ClientCredentials(Model):
    type: Literal["oauth2_client_credentials"]
    token_url: EnvStr
    client_id: EnvStr
    client_secret: EnvStr
    scope: str | None = None
    audience: str | None = None
    refresh_margin: Duration = 60.0
    """Refresh the cached token this long before it expires."""


Auth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | BasicAuth | HeadersAuth | OAuth2ClientCredentials,
    Field(discriminator="type"),
]


# --- resilience -------------------------------------------------------------------------------------
class Timeouts(Model):
    connect: Duration = 5.0
    read: Duration = 5.0
    write: Duration = 5.0
    pool: Duration = 5.0


class RateLimit(Model):
    requests: int = Field(ge=1)
    per: Duration
    """Window length: `1s`, `1m`, `1h`, `1d`."""


class CircuitBreaker(Model):
    fail_max: int = Field(5, ge=1)
    """Consecutive counted failures that open the breaker."""
    reset_timeout: Duration = 30.0
    """How long the breaker stays open before a trial call (half-open)."""
    success_threshold: int = Field(1, ge=1)
    """Successful trial calls needed to close it again."""
    count: list[ErrorKind] = Field(default_factory=lambda: _kinds("API_ERROR", "NETWORK_ERROR", "TIMEOUT"))
    """Error kinds that count as failures. API_ERROR counts only for 5xx statuses."""
    count_status: list[int] = Field(default_factory=empty_list)
    """Extra statuses (e.g. 429) that count as failures."""


class Retry(Backoff):
    retry_on: list[ErrorKind] = Field(
        default_factory=lambda: _kinds("API_ERROR", "RATE_LIMITED", "NETWORK_ERROR", "TIMEOUT"))
    """Error kinds that are retried. API_ERROR is retried only for 5xx statuses; only idempotent requests
    (or ones with an Idempotency-Key header) are retried at all."""
    max_retry_after: Duration = 60.0
    """Cap on a server's Retry-After."""


class HealthCheck(Model):
    path: str = "/"
    method: Literal["GET", "HEAD", "POST"] = "GET"
    interval: Duration = 30.0
    conditions: list[str] = Field(default_factory=lambda: ["status == 200"])
    """gatus-style conditions, e.g. `status == 200`, `response_time < 500`."""


class _IntegrationBase(Model):
    id: Identifier
    name: str = ""
    description: str = ""
    enabled: bool = True
    """Disabled integrations are validated but never connected to."""


class HttpIntegration(_IntegrationBase):
    type: Literal["http"]
    base_url: EnvStr
    auth: Auth = Field(default_factory=lambda: NoAuth(type="none"))
    headers: dict[str, EnvStr] = Field(default_factory=dict)
    timeout: Timeouts | Duration = Field(default_factory=Timeouts)
    """One duration for every phase, or connect/read/write/pool separately."""
    max_connections: int = Field(20, ge=1)
    rate_limits: list[RateLimit] = Field(default_factory=empty_list)
    on_rate_limit: Literal["wait", "fail"] = "wait"
    """When a limit is reached: wait for a slot (up to max_wait) or fail fast with RATE_LIMITED."""
    max_wait: Duration = 10.0
    circuit_breaker: CircuitBreaker | None = Field(default_factory=CircuitBreaker)
    retry: Retry | None = Field(default_factory=Retry)
    health: HealthCheck | None = None

    @property
    def timeouts(self) -> "Timeouts":
        if isinstance(self.timeout, Timeouts):
            return self.timeout
        t = self.timeout
        return Timeouts(connect=t, read=t, write=t, pool=t)


class Pool(Model):
    min_size: int = Field(1, ge=0)
    max_size: int = Field(10, ge=1)


class PostgresIntegration(_IntegrationBase):
    type: Literal["postgres"]
    dsn: EnvStr
    """libpq connection string or URL; put the password in ${env:...}."""
    pool: Pool = Field(default_factory=Pool)
    connect_timeout: Duration = 5.0


class RedisIntegration(_IntegrationBase):
    type: Literal["redis"]
    url: EnvStr
    connect_timeout: Duration = 5.0


class MongoIntegration(_IntegrationBase):
    type: Literal["mongodb"]
    uri: EnvStr
    database: str
    connect_timeout: Duration = 5.0


class Embedding(Model):
    """Where a vector integration gets embeddings for texts: an OpenAI-compatible embeddings API
    (``POST {path}`` with ``{"model", "input": [...]}``, answering ``{"data": [{"embedding": [...]}]}``)
    behind one of the http integrations, so it has that integration's auth, limits and breaker."""

    integration: Identifier
    path: str = "/embeddings"
    model: str | None = None


class VectorIntegration(_IntegrationBase):
    type: Literal["vector"]
    path: str | None = None
    """Directory of a chromadb PersistentClient."""
    host: str | None = None
    port: int = Field(8000, ge=1, le=65535)
    collection: str = "progressive"
    embedding: Embedding | None = None
    """Without it, every add, update and search must pass its embeddings; Chroma's default embedding
    function is never used (it downloads a model, which fails offline)."""

    @model_validator(mode="after")
    def _where(self) -> Self:
        if (self.path is None) == (self.host is None):
            raise ValueError("a vector integration needs exactly one of 'path' or 'host'")
        return self


DATABASE_OPERATIONS: dict[str, tuple[str, ...]] = {
    "postgres": ("query", "execute", "transaction"),
    "redis": ("get", "set", "delete", "mget", "hget", "hset", "publish"),
    "mongodb": (
        "find", "find_one", "insert_one", "insert_many", "update_one", "update_many",
        "delete_one", "delete_many", "aggregate",
    ),
    "vector": ("add", "search", "update", "delete"),
}

DatabaseIntegration = PostgresIntegration | RedisIntegration | MongoIntegration | VectorIntegration
Integration = Annotated[HttpIntegration | DatabaseIntegration, Field(discriminator="type")]


class IntegrationsFile(Model):
    """Schema of integrations.yaml."""

    version: Literal[1] = 1
    integrations: list[Integration] = Field(default_factory=empty_list)
