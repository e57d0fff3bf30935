"""Settings of the scheduled checks (``[health]``) and of the metrics listener
(``[metrics]``), wired into the one Settings class."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fastagi.config.checks import ip_networks

# Cheap and harmless: reads of PostgreSQL and of Asterisk's state, one file written and
# removed. Run every ``interval`` seconds.
FREQUENT_CHECKS = (
    "postgresql",
    "migrations",
    "listen",
    "ami",
    "ami-session",  # the server's own AMI connection (only a running server has one)
    "dialplan",
    "paging-devices",
    "journal",
    "recordings",
    "departments",
    "deactivators",
    "unknown-extension",
    "emergency",
)
# Slower, or felt elsewhere: the probe call (about 7 s, a row in probe_calls), a prompt
# rendered and played, every AMI right tried, a login at the mail server and a request to
# the SMS gateway. Run every ``slow_interval`` seconds.
SLOW_CHECKS = ("ami-rights", "fastagi-url", "tts", "smtp", "webhook")


class HealthSettings(BaseModel):
    """``[health]``: ``fastagi serve`` runs the checks of ``fastagi check`` on a schedule
    with its own pool and AMI connection; a check that keeps failing lights the health
    lamp, e-mails ``[notify] admin_emails`` and records ``health_degraded``; the same
    ways tell its recovery (README, "Health lamp")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval: float = Field(default=10.0, ge=1.0, le=3600.0)
    checks: list[str] = Field(default_factory=lambda: list(FREQUENT_CHECKS))
    slow_interval: float = Field(default=900.0, ge=1.0, le=86_400.0)
    slow_checks: list[str] = Field(default_factory=lambda: list(SLOW_CHECKS))
    # How long one check of a run of cheap ones may take (a run with slow checks gives
    # each [check] timeout): a PostgreSQL or Asterisk that hangs is a FAIL within this,
    # not after half a minute.
    timeout: float = Field(default=5.0, gt=0, le=300)
    # Hysteresis: this many runs in a row with a FAIL raise "degraded"; this many
    # without one clear it. A check that fails every other run changes nothing.
    raise_after: int = Field(default=2, ge=1, le=100)
    clear_after: int = Field(default=3, ge=1, le=100)
    # A BLF key on this device (hint *559 in extensions_custom.conf) is the lamp.
    lamp_device: str = "Custom:PANIC_HEALTH"
    lamp_state: str = "BUSY"  # degraded; NOT_INUSE when healthy
    # A server's report older than this no longer counts towards the site's state (it
    # stopped without saying so).
    stale_after: float = Field(default=120.0, ge=10.0, le=86_400.0)

    @field_validator("lamp_device")
    @classmethod
    def _custom_device(cls, value: str) -> str:
        # func_devstate only writes Custom: devices.
        if not value.startswith("Custom:") or any(c in value for c in "(), \r\n\0"):
            raise ValueError(f"lamp_device must be a Custom: device: {value!r}")
        return value

    @field_validator("lamp_state")
    @classmethod
    def _lamp_state(cls, value: str) -> str:
        if value not in ("BUSY", "INUSE", "RINGING", "ONHOLD"):
            raise ValueError("lamp_state must be BUSY, INUSE, RINGING or ONHOLD")
        return value

    @model_validator(mode="after")
    def _stale_after_runs(self) -> HealthSettings:
        if self.stale_after < 3 * self.interval:
            raise ValueError("stale_after must be at least three intervals")
        return self


class MetricsSettings(BaseModel):
    """``[metrics]``: ``/metrics`` (Prometheus) and ``/healthz``. On the web console's
    listener when ``[web] enabled``, else on a listener of their own here."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    # Who may read /metrics (no login): loopback only unless widened. A request that came
    # through a proxy counts as its X-Forwarded-For client when [web] trusts the proxy,
    # and is refused otherwise.
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        return ip_networks(value)
