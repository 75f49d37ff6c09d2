"""progressive.yaml: runtime settings, layered default < file < PROGRESSIVE_* env < flags."""


from typing import Annotated, Literal

from pydantic import Field

from progressive_cli.config.common import Duration, EnvStr, Model


class StateSettings(Model):
    url: EnvStr = "sqlite:///.progressive/state.db"
    """`sqlite:///relative/or/absolute/path.db` (embedded, the default) or `postgresql://...`."""
    durability: Literal["normal", "full"] = "normal"
    """normal survives any process crash; full also syncs every commit to disk, for power loss."""


class QueueSettings(Model):
    url: EnvStr | None = None
    """Unset: the work queue lives in the state store. `redis://...` for Redis Streams."""


class HealthSettings(Model):
    interval: Duration = 30.0
    """How often the daemon runs the health checks (the seed: 30 s)."""
    response_time: Duration = 5.0
    """A check slower than this is degraded (the seed: 5 s)."""
    error_rate: float = Field(0.05, ge=0, le=1)
    """Error rate above which a check is degraded (the seed: 5%)."""
    availability: float = Field(0.99, ge=0, le=1)
    """Availability target over the history window (the seed: 99%)."""
    history: Duration = 86400.0
    """How long check results are kept (24 h)."""
    timeout: Duration = 10.0
    """Longest a single check may take."""


class LogSink(Model):
    type: Literal["log"]


class EventSink(Model):
    type: Literal["event"]
    event: str = "integration.alert"


class WebhookSink(Model):
    type: Literal["webhook"]
    url: EnvStr
    """Receives Slack-compatible JSON."""
    timeout: Duration = 5.0


class CommandSink(Model):
    type: Literal["command"]
    command: list[EnvStr] = Field(min_length=1)
    """argv; the alert arrives as JSON on stdin."""
    timeout: Duration = 10.0


Sink = Annotated[LogSink | EventSink | WebhookSink | CommandSink, Field(discriminator="type")]


def _default_sinks() -> list[Sink]:
    return [LogSink(type="log"), EventSink(type="event")]


class AlertSettings(Model):
    failure_threshold: int = Field(3, ge=1)
    """Consecutive failed checks before an alert fires."""
    success_threshold: int = Field(2, ge=1)
    """Consecutive good checks before it is resolved."""
    reminder_interval: Duration = 1800.0
    """Least time between reminders of an alert that is still firing."""
    sinks: list[Sink] = Field(default_factory=lambda: _default_sinks())


class DaemonSettings(Model):
    pidfile: str = ".progressive/daemon.pid"
    logfile: str = ".progressive/daemon.log"
    workers: int = Field(4, ge=1, le=256)
    """Workflow runs executed at once."""
    poll_interval: Duration = 1.0
    grace: Duration = 30.0
    """On SIGTERM, how long the runs in flight may go on before they are stopped at a step boundary."""
    retention: Duration = 604800.0
    """How long finished executions and events are kept (7 days)."""


class MessageSettings(Model):
    retention: Duration = 604800.0
    """How long agent messages are kept, whatever their status (7 days); one still queued then expires."""
    max_attempts: int = Field(10, ge=1, le=1000)
    """Delivery attempts of a message before it is failed for good."""


class LoggingSettings(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class DashboardSettings(Model):
    refresh: Duration = 1.0
    """Seconds between refreshes of `progressive dashboard` (its --refresh overrides it)."""
    keymap: dict[str, str] = Field(default_factory=dict)
    """Binding id -> keys, to remap the dashboard's keys, e.g. ``{faults: "f", jump: "ctrl+g"}``."""


class Settings(Model):
    """Schema of progressive.yaml."""

    version: Literal[1] = 1
    state: StateSettings = Field(default_factory=StateSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    messages: MessageSettings = Field(default_factory=MessageSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
