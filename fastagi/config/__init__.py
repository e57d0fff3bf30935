"""The one settings class, built once at start-up and passed down.

Sources, highest priority first: keyword arguments, ``FASTAGI_*`` environment variables
(nested with ``__``, e.g. ``FASTAGI_AGI__PORT=4574``), then the TOML file named by
``FASTAGI_CONFIG`` (default ``/etc/fastagi-panic/config.toml`` when it exists).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fastagi.config.checks import asterisk_devices, ip_networks, one_line
from fastagi.config.drill import DrillSettings as DrillSettings
from fastagi.config.health import HealthSettings, MetricsSettings
from fastagi.config.notify import NotifySettings
from fastagi.config.recording import RecordingSettings as RecordingSettings
from fastagi.config.tts import TtsSettings

DEFAULT_CONFIG_FILE = Path("/etc/fastagi-panic/config.toml")


class AgiSettings(BaseModel):
    """The FastAGI listener."""

    # A misspelt setting is an error at start-up, not a default silently used.
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    # Asterisk connects from the PBX itself in the usual FreePBX install; anything else
    # must be allowed explicitly, because a FastAGI client can trigger or silence alarms.
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Connections served at once (one per call in progress). At the cap a new connection
    # takes the slot of one still waiting for its environment (not a call yet; silent or
    # stalled ones go first), and is refused at once only when every slot holds a call.
    # `fastagi serve` raises the open-files limit to fit.
    max_sessions: int = Field(default=1000, ge=1, le=100_000)
    # Asterisk sends the environment at once after connecting; a peer that stalls longer
    # than this is not Asterisk.
    environment_timeout: float = Field(default=5.0, gt=0)
    # A reply can legitimately take as long as a prompt plays or GET DATA waits, so the
    # per-command timeout is generous; the caller's hang-up arrives as HANGUP/EOF anyway.
    reply_timeout: float = Field(default=600.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    # The kernel's queue of connections not yet accepted.  asyncio's default of 100
    # overflows when hundreds of calls arrive at once, and a dropped SYN is retried only
    # after 1 s, 3 s, ... while Asterisk gives up connecting after 2 s.
    listen_backlog: int = Field(default=1024, ge=1)

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        return ip_networks(value)


class DatabaseSettings(BaseModel):
    """PostgreSQL, reached through asyncpg."""

    model_config = ConfigDict(extra="forbid")

    dsn: SecretStr = SecretStr("postgresql:///fastagi")
    pool_min_size: int = Field(default=1, ge=0)
    # One connection is kept for the leader and page locks (fastagi/store/leadership.py);
    # a page holds no other while it dials, only for its short statements, so a burst of
    # alarms paging at once shares the rest (docs/performance.md, "Many alarms at once").
    # With PostgreSQL's default max_connections (100), 20 leaves room for 3 servers and
    # their LISTEN connections, the CLI and the console.
    pool_max_size: int = Field(default=20, ge=1)


class AmiSettings(BaseModel):
    """The Asterisk Manager Interface."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "fastagi"
    secret: SecretStr = SecretStr("")
    # A Ping every ping_interval seconds; no answer within ping_timeout means the
    # connection is half-open (Asterisk's host gone, no RST): it is dropped and reopened.
    # Worst-case detection time is their sum.
    ping_interval: float = Field(default=10.0, gt=0, le=300)
    ping_timeout: float = Field(default=5.0, gt=0, le=60)


class AlarmSettings(BaseModel):
    """The paging loop, the BLF lamps and what deactivation does.

    The dialplan names match the contexts in extensions_custom.conf; change them only
    together. Intervals are not here: they live in PostgreSQL (``alarm_settings`` and
    ``departments.interval_seconds``) so an administrator can change them while alarms run.
    """

    model_config = ConfigDict(extra="forbid")

    # AMI Originate of Local/s@<page_context>/n, connected to <announce_context>,s,1.
    page_context: str = "fastagi-panic-page"
    announce_context: str = "fastagi-panic-announce"
    # Seconds each device may ring before Page() gives up on it (Page's third argument).
    page_timeout: int = Field(default=20, ge=1, le=300)
    # Silence before the announcement, so phones that auto-answer a little late (real
    # phones take 0.2-1 s) hear it from its first word.
    lead_in: float = Field(default=1.0, ge=0.0, le=10.0)
    # A page (ringing, lead-in and announcement) that lasts longer is hung up.
    max_page_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    # Before each page the alarm row stays locked until Asterisk reports every device
    # dialled (its INVITE out), at most this long: a deactivation meanwhile waits, then
    # hangs the page up, so no phone rings after a deactivation was acknowledged. A
    # device that cannot be dialled holds a deactivation no longer than this.
    dial_confirm_timeout: float = Field(default=2.0, ge=0.0, le=10.0)
    # Auto-answer headers added to each paged device's INVITE (PJSIP_HEADER(add,...)); an
    # empty value adds no header. These are FreePBX Paging's own values, which Yealink,
    # Polycom, Grandstream, Snom and Cisco SPA phones honour (one or the other).
    alert_info: str = "<http://www.notused>;info=alert-autoanswer;delay=0"
    call_info: str = "<uri>;answer-after=0"
    # What paged phones show; {department} and {extension} are filled in.
    caller_name: str = "PANIC {department}"
    # The BLF lamps: Custom:<lamp_device> while any alarm runs, and
    # Custom:<department_lamp_prefix><department id> per department.
    lamp_device: str = "Custom:PANIC"
    department_lamp_prefix: str = "Custom:PANIC_"
    lamp_state: Literal["BUSY", "INUSE", "RINGING"] = "BUSY"
    # Deactivation: hang up the page in progress at once (True), or let the announcement
    # that is playing finish (False). No new cycle starts either way.
    hangup_on_deactivate: bool = True
    # Page an "all clear" once after a deactivation.
    all_clear: bool = False
    all_clear_text: str = "All clear. The alarm of department {department} has ended."
    announcement: str = "Panic alarm. Department {department}. Extension {extension}."
    # Devices paged for an alarm from an extension that belongs to no department. Unset:
    # every device of every paging group (an alarm must never page nobody). An empty list
    # pages nobody, and the server refuses to start with it unless
    # allow_unknown_department_to_page_nobody is true.
    unknown_department_devices: list[str] | None = None
    allow_unknown_department_to_page_nobody: bool = False
    # After a cycle raised an unexpected error, wait this long before the next attempt.
    error_backoff: float = Field(default=2.0, gt=0.0, le=60.0)
    # How often a server looks for active alarms that no server leads (one died), and
    # reloads departments and paging groups.
    takeover_interval: float = Field(default=3.0, gt=0.0, le=300.0)
    directory_refresh: float = Field(default=60.0, gt=0.0, le=3600.0)
    # How often a server looks in astdb for alarms the dialplan raised while no server
    # took panic calls (fastagi/alarms/fallback.py), besides at start-up, after each AMI
    # reconnection and at once on the dialplan's UserEvent: the safety net for an event
    # missed while AMI was away. One DBGetTree action each time.
    fallback_scan_interval: float = Field(default=10.0, gt=0.0, le=300.0)
    # First key of pg_try_advisory_lock(namespace, alarm_id): the lock that makes one
    # server the leader of an alarm. Change it only if another application uses it.
    lock_namespace: int = Field(default=0x50414E, ge=-(2**31), le=2**31 - 1)

    #: What shapes an alarm's timeline, kept with its snapshot for a replay
    #: (fastagi history export --format replay). Not the dialplan's names, lamps or
    #: scan intervals: they belong to the machine, and a replay uses its own.
    REPLAYED: ClassVar[tuple[str, ...]] = (
        "page_timeout",
        "lead_in",
        "max_page_seconds",
        "dial_confirm_timeout",
        "caller_name",
        "hangup_on_deactivate",
        "all_clear",
        "all_clear_text",
        "announcement",
        "unknown_department_devices",
        "allow_unknown_department_to_page_nobody",
    )

    def replayed(self) -> dict[str, Any]:
        """The settings of :attr:`REPLAYED`, as JSON values."""
        return self.model_dump(mode="json", include=set(self.REPLAYED))

    @field_validator("alert_info", "call_info", "caller_name", "all_clear_text", "announcement")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # These travel in AMI headers and SIP headers: a line break would end the header.
        return one_line(value)

    @field_validator("unknown_department_devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        asterisk_devices(value or ())
        return value

    @model_validator(mode="after")
    def _never_silent(self) -> AlarmSettings:
        if self.unknown_department_devices == [] and not (
            self.allow_unknown_department_to_page_nobody
        ):
            raise ValueError(
                "unknown_department_devices is empty: an alarm from an extension in no"
                " department would page nobody; name devices, leave it unset to page every"
                " paging group, or set allow_unknown_department_to_page_nobody = true"
            )
        return self

    @model_validator(mode="after")
    def _templates(self) -> AlarmSettings:
        sample = {"department": "x", "extension": "1"}
        for name in ("announcement", "all_clear_text", "caller_name"):
            try:
                getattr(self, name).format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name} may use only {{department}} and {{extension}}: {exc!r}"
                ) from None
        for name in ("lamp_device", "department_lamp_prefix"):
            if not getattr(self, name).startswith("Custom:"):
                raise ValueError(f"{name} must be a Custom: device (func_devstate)")
        return self


class FlowSettings(BaseModel):
    """Install-time knobs of the panic and deactivation calls (``[flows]``).

    The alarm policy an administrator changes while the system runs (confirmation
    attempts, what silence means, PIN attempts and lockout) lives in the database row
    ``alarm_settings``, not here.
    """

    model_config = ConfigDict(extra="forbid")

    # Play a short "alarm activated" after the caller confirms. Off for discretion: the
    # call then ends without a word, so whoever stands next to the caller hears nothing.
    ack_on_confirm: bool = True
    # Also send the confirmation question as text to the phone's display (SIP MESSAGE
    # via SendText). Off by default: not every phone shows it, and some ring for it.
    send_text: bool = False
    # How long GET DATA waits for the answer to the confirmation question, per attempt.
    confirm_timeout_ms: int = Field(default=5000, ge=500, le=60_000)
    # Keys other than 1 and 2 re-prompt; after this many the call counts as unanswered
    # (silence alone is counted against the database's confirmation_attempts).
    invalid_key_limit: int = Field(default=3, ge=1, le=10)
    # How long GET DATA waits for each digit of the PIN ('#' ends it).
    pin_timeout_ms: int = Field(default=6000, ge=1000, le=60_000)
    # Prompts to choose an alarm (several active) before giving up.
    menu_attempts: int = Field(default=3, ge=1, le=10)
    # How long GET DATA waits for the choice of alarm.
    menu_timeout_ms: int = Field(default=5000, ge=500, le=60_000)
    # How long a live call waits for a prompt to be rendered before it plays the
    # built-in sounds instead (a cached prompt takes microseconds, a render ~0.1 s).
    render_timeout: float = Field(default=3.0, gt=0, le=30.0)
    # A directory of the site's own prompt catalogues (<code>.toml, like the built-in
    # fastagi/config/catalogues/en.toml): more languages, or a built-in one replaced.
    catalogues: Path | None = None
    # PIN guessing across extensions (on top of alarm_settings' per-extension lockout):
    # when this many wrong PINs, from any extensions and any server, fall within
    # global_pin_window seconds, every deactivation is refused for global_lockout_seconds
    # after the last of them. Counted from the shared history; 0 turns it off.
    global_pin_failures: int = Field(default=10, ge=0, le=10_000)
    global_pin_window: float = Field(default=60.0, gt=0, le=86_400)
    global_lockout_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # Who a caller is comes from what an outside caller cannot set: FreePBX's AMPUSER, or
    # the PJSIP endpoint the call arrived on (an extension's endpoint is named by its
    # number). A call from any other endpoint (a trunk: an IVR's Custom Destination
    # reached from outside) or channel type is refused and recorded ("refuse"), or
    # trusted by its CALLERID(num), which the far end of a trunk can set to anything
    # ("callerid"; only for a trusted panic-button gateway on a trunk).
    untrusted_caller: Literal["refuse", "callerid"] = "refuse"
    # How long a deactivation call waits for PostgreSQL (the PIN hash, a lockout, the
    # alarms) before the caller hears that alarms cannot be deactivated right now.
    database_timeout: float = Field(default=5.0, gt=0, le=60.0)


# Characters that would split an AGI() argument or a Dial()-like list in the dialplan.
_DIAL_FORBIDDEN = frozenset(",&|() \t\r\n\0\"'")


class EmergencySettings(BaseModel):
    """The emergency call (``[emergency]``). Empty ``destinations``: no emergency call."""

    # Dial strings, called in order: "PJSIP/150", a ring group "Local/600@from-internal",
    # an outbound number "Local/5551234@outbound-trunk-context".
    destinations: list[str] = Field(default_factory=list)
    # Called when nobody acknowledged within ack_timeout; empty: only on_escalated runs.
    escalation_destinations: list[str] = Field(default_factory=list)
    # Caller id of the emergency calls: "extension" shows the alarm's extension (or, with
    # emergency_cid_lookup, FreePBX's emergency CID of that extension) with caller_id_name;
    # "fixed" shows caller_id_fixed, e.g. '"Panic alarm" <5550100>'.
    caller_id_mode: Literal["extension", "fixed"] = "extension"
    caller_id_fixed: str = ""
    caller_id_name: str = "PANIC {department}"
    # FreePBX keeps each device's emergency CID in astdb at DEVICE/<ext>/emergency_cid;
    # read it over AMI (DBGet) and use it when set.
    emergency_cid_lookup: bool = True
    emergency_cid_family: str = "DEVICE"
    emergency_cid_key: str = "{extension}/emergency_cid"
    # Seconds a destination may ring (Originate's Timeout).
    ring_timeout: int = Field(default=30, ge=1, le=300)
    # Walks through each list; a pause between rounds (not between destinations).
    rounds: int = Field(default=3, ge=1, le=20)
    escalation_rounds: int = Field(default=3, ge=1, le=20)
    round_pause: float = Field(default=5.0, ge=0.0, le=600.0)
    # Seconds after start without acknowledgement before escalating.
    ack_timeout: float = Field(default=180.0, gt=0.0, le=86400.0)
    # The answered call: its announcement is played at most this many times, each
    # followed by digit_timeout_ms of waiting for the key.
    announcement_repeats: int = Field(default=5, ge=1, le=50)
    digit_timeout_ms: int = Field(default=3000, ge=500, le=60_000)
    # An answered call lasting longer is hung up (a stuck channel must not block the walk).
    max_call_seconds: float = Field(default=300.0, gt=0.0, le=3600.0)
    # How often a running walk reads the acknowledgement (and the alarm's state) from
    # PostgreSQL: how soon it sees an acknowledgement taken by another server.
    poll_interval: float = Field(default=1.0, gt=0.0, le=60.0)
    # Where the answered call goes: the dialplan context [fastagi-panic-emergency].
    context: str = "fastagi-panic-emergency"
    # What the responder hears; {department}, {extension} and {time} (activation, local
    # time in time_format) are filled in.
    announcement: str = (
        "Emergency. Panic alarm in department {department}, extension {extension}, "
        "at {time}. Press 1 to acknowledge."
    )
    time_format: str = "%H:%M"
    acknowledged_text: str = "Acknowledged. Thank you."

    @field_validator("destinations", "escalation_destinations")
    @classmethod
    def _dial_strings(cls, value: list[str]) -> list[str]:
        for dial in value:
            tech, _, resource = dial.partition("/")
            if not (tech and resource) or _DIAL_FORBIDDEN.intersection(dial):
                raise ValueError(
                    f"not a dial string like PJSIP/150 or Local/5551234@context: {dial!r}"
                )
        return value

    @field_validator(
        "caller_id_fixed",
        "caller_id_name",
        "announcement",
        "acknowledged_text",
        "emergency_cid_family",
        "emergency_cid_key",
        "context",
    )
    @classmethod
    def _one_line(cls, value: str) -> str:
        # These travel in AMI headers or AGI commands: a line break would end them.
        return one_line(value)

    @model_validator(mode="after")
    def _consistent(self) -> EmergencySettings:
        if self.caller_id_mode == "fixed" and not self.caller_id_fixed.strip():
            raise ValueError("caller_id_mode 'fixed' needs caller_id_fixed")
        sample = {"department": "x", "extension": "1", "time": "12:00"}
        for name in ("announcement", "caller_id_name"):
            try:
                getattr(self, name).format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name} may use only {{department}}, {{extension}} and {{time}}: {exc!r}"
                ) from None
        try:
            self.emergency_cid_key.format(extension="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"emergency_cid_key may use only {{extension}}: {exc!r}") from None
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.destinations or self.escalation_destinations)


class JournalSettings(BaseModel):
    """``[journal]``: where history events wait while PostgreSQL is down."""

    # None: no journal on disk, events wait in memory only (tests, a read-only system).
    directory: Path | None = Path("/var/lib/fastagi-panic/journal")
    # Events kept in memory when the journal cannot be written (disk full, read-only).
    memory_limit: int = Field(default=10_000, ge=0)
    # Events written to PostgreSQL per transaction by a replay.
    replay_batch: int = Field(default=200, ge=1, le=10_000)
    # How long recording one event may wait for PostgreSQL before it is journalled.
    write_timeout: float = Field(default=5.0, gt=0, le=120.0)


class CheckSettings(BaseModel):
    """``fastagi check`` (fastagi/assurance/): what it looks for in the dialplan."""

    model_config = ConfigDict(extra="forbid")

    # The context the phones dial from, where the feature codes must be found (FreePBX:
    # from-internal, which includes our [from-internal-custom] or Misc Applications').
    phone_context: str = "from-internal"
    # The feature codes of extensions_custom.conf: trigger, deactivate, probe. Change
    # them here when you changed them there.
    feature_codes: list[str] = Field(default_factory=lambda: ["*555", "*556", "*599"])
    # How long one check may take before it counts as failed (the FastAGI probe call
    # takes about 7 s: a prompt and GET DATA's 5 s for digits that never come).
    timeout: float = Field(default=30.0, gt=0, le=300)

    @field_validator("phone_context", "feature_codes")
    @classmethod
    def _dialplan_words(cls, value: str | list[str]) -> str | list[str]:
        # They go into DIALPLAN_EXISTS(context,exten,1) over AMI: a ',' or a ')' would
        # end the argument early, a line break the AMI header.
        for word in [value] if isinstance(value, str) else value:
            if not word or any(char in word for char in ",()\r\n\0 "):
                raise ValueError(f"not a dialplan context or extension: {word!r}")
        return value


class WebSettings(BaseModel):
    """``[web]``: the web console (live board, alarm pages, actions), served by the same
    process as the FastAGI server. Off unless enabled; put it behind the host's web
    server with TLS (README, "Web console")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # Loopback by default: the reverse proxy (Apache or nginx with TLS) forwards to it.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # A login lasts this long (a shift and some), then the user logs in again.
    session_lifetime: float = Field(default=12 * 3600.0, ge=60.0, le=30 * 86400.0)
    # Failed logins allowed per user name, and per client address, within
    # login_window seconds; beyond that a login is refused (HTTP 429) until the oldest
    # failure leaves the window. Counted in PostgreSQL: every server sees them all.
    login_failures_per_name: int = Field(default=5, ge=1, le=1000)
    login_failures_per_address: int = Field(default=20, ge=1, le=10_000)
    login_window: float = Field(default=900.0, gt=0, le=86_400.0)
    # Believe the reverse proxy's X-Forwarded-Proto (cookies marked Secure when it says
    # https) and X-Forwarded-For (the client's address, for the rate limit and the
    # history). Only behind a proxy on the same host: anyone else could forge them.
    trust_proxy_headers: bool = False
    # Serve TLS directly (PEM files) instead of behind a proxy; both or neither.
    certificate: Path | None = None
    private_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FASTAGI_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    agi: AgiSettings = Field(default_factory=AgiSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    alarm: AlarmSettings = Field(default_factory=AlarmSettings)
    flows: FlowSettings = Field(default_factory=FlowSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    emergency: EmergencySettings = Field(default_factory=EmergencySettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    check: CheckSettings = Field(default_factory=CheckSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    drill: DrillSettings = Field(default_factory=DrillSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_file_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def config_file_path() -> Path | None:
    """The TOML file to read, or None. A named file that is missing is an error."""
    named = os.environ.get("FASTAGI_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"FASTAGI_CONFIG names {path}, which is not a file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
