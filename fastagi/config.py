"""The one settings class, built once at start-up and passed down.

Sources, highest priority first: keyword arguments, ``FASTAGI_*`` environment variables
(nested with ``__``, e.g. ``FASTAGI_AGI__PORT=4574``), then the TOML file named by
``FASTAGI_CONFIG`` (default ``/etc/fastagi-panic/config.toml`` when it exists).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("/etc/fastagi-panic/config.toml")


class AgiSettings(BaseModel):
    """The FastAGI listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    # Asterisk connects from the PBX itself in the usual FreePBX install; anything else
    # must be allowed explicitly, because a FastAGI client can trigger or silence alarms.
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    max_sessions: int = Field(default=2000, ge=1)
    # Asterisk sends the environment at once after connecting; a peer that stalls longer
    # than this is not Asterisk.
    environment_timeout: float = Field(default=5.0, gt=0)
    # A reply can legitimately take as long as a prompt plays or GET DATA waits, so the
    # per-command timeout is generous; the caller's hang-up arrives as HANGUP/EOF anyway.
    reply_timeout: float = Field(default=600.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP network: {network!r} ({exc})") from None
        return value


class DatabaseSettings(BaseModel):
    """PostgreSQL, reached through asyncpg."""

    dsn: SecretStr = SecretStr("postgresql:///fastagi")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)


class AmiSettings(BaseModel):
    """The Asterisk Manager Interface."""

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "fastagi"
    secret: SecretStr = SecretStr("")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FASTAGI_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    agi: AgiSettings = Field(default_factory=AgiSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    log_level: str = "INFO"

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
