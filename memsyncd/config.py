"""Settings: config.json + MEMSYNC_ environment overrides, the mem0 key source.

Loaded with pydantic-settings. The API key is never part of the settings model that
gets printed or dumped: it lives in a ``SecretStr`` read only from, in this order,
``MEM0_API_KEY``, ``$CREDENTIALS_DIRECTORY/mem0_api_key`` (systemd ``LoadCredential=``)
and the key file ``$XDG_CONFIG_HOME/memsyncd/mem0_api_key`` (default
``~/.config/memsyncd/mem0_api_key``, mode 0600, written by ``memsyncctl init``; the
same file the systemd unit loads as its credential).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memsyncd.errors import ConfigError, FileAccessError, SymlinkRefusedError
from memsyncd.loopback import is_loopback_host
from memsyncd.store import safe_files
from memsyncd.store.paths import CONFIG_RELPATH as CONFIG_RELPATH
from memsyncd.store.paths import QUEUE_RELPATH as QUEUE_RELPATH
from memsyncd.store.paths import STATE_RELPATH as STATE_RELPATH
from memsyncd.store.paths import Paths as Paths  # re-exported: root resolution lives in the stdlib-only paths.py
from memsyncd.store.paths import resolve_root as resolve_root

KEY_ENV = "MEM0_API_KEY"
KEY_CREDENTIAL = "mem0_api_key"
ENV_PREFIX = "MEMSYNC_"


def _default_user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser() or "default_user"
    except Exception:  # noqa: BLE001 - getpass raises several types when no user entry exists
        return "default_user"


def check_url(url: str) -> str:
    """Accept http(s) URLs; plain http only to loopback hosts (SPEC 2)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host name")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("plain http is allowed only to localhost / 127.0.0.0/8 / ::1; use https://")
    return url.rstrip("/")


ServiceUrl = Annotated[str, AfterValidator(check_url)]


class LocalSettings(BaseModel):
    """Where the local OpenMemory server is."""

    model_config = ConfigDict(extra="ignore")

    url: ServiceUrl = "http://localhost:8765"
    user_id: str = Field(default_factory=_default_user, min_length=1)
    app: str = Field(default="memsyncd", min_length=1)
    # OpenMemory's SQLite file when it is on this machine (e.g. the API container's volume): a write to it
    # (or to its -wal) starts an incremental scan at once, beside the periodic ones
    watch_path: Path | None = None


class CloudSettings(BaseModel):
    """Where the mem0 platform is, and which scope memsyncd syncs."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = False
    url: ServiceUrl = "https://api.mem0.ai"
    user_id: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    org_id: str | None = None
    project_id: str | None = None


class SyncRule(BaseModel):
    """A selective-sync rule: memories written by ``app`` and/or carrying ``category`` sync at most at ``level``.

    Level 0 makes them local-only, exactly like ``metadata.level`` 0: nothing of them in any request.
    """

    model_config = ConfigDict(extra="forbid")

    app: str | None = Field(default=None, min_length=1)
    category: str | None = Field(default=None, min_length=1)
    level: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _names_something(self) -> SyncRule:
        if self.app is None and self.category is None:
            raise ValueError("a rule needs \"app\" and/or \"category\" (e.g. {\"app\": \"cursor\", \"level\": 0})")
        return self

    def describe(self) -> str:
        """``app=cursor category=work -> level 0`` (for doctor)."""
        names = [f"{key}={value}" for key, value in (("app", self.app), ("category", self.category)) if value]
        return f"{' '.join(names)} -> level {self.level}{' (local-only)' if self.level == 0 else ''}"


class SyncSettings(BaseModel):
    """Timing, safety and concurrency knobs."""

    model_config = ConfigDict(extra="forbid")

    debounce_ms: int = Field(default=200, ge=0, le=60_000)
    pull_interval_seconds: float = Field(default=300, gt=0)
    reconcile_interval_seconds: float = Field(default=3600, gt=0)
    default_level: int = Field(default=0, ge=0)
    attempts_per_run: int = Field(default=3, ge=1, le=20)
    concurrency: int = Field(default=8, ge=1, le=64)
    max_delete_fraction: float = Field(default=0.1, ge=0, le=1)
    request_timeout_seconds: float = Field(default=30, gt=0, le=600)  # total per request try, body included
    max_response_mb: float = Field(default=16, ge=0.0625, le=1024)  # answers larger than this are refused
    max_retry_after_seconds: float = Field(default=60, ge=0, le=600)
    event_wait_seconds: float = Field(default=5, ge=0, le=300)
    local_scan_interval_seconds: float = Field(default=30, ge=0)  # new local memories (0 = off)
    local_full_scan_interval_seconds: float = Field(default=900, ge=0)  # edits and deletions (0 = off)
    rules: list[SyncRule] = Field(default_factory=list)

    @property
    def max_response_bytes(self) -> int:
        """``max_response_mb`` in bytes: the cap on one response body."""
        return int(self.max_response_mb * 2**20)


class Settings(BaseSettings):
    """The whole configuration: file values, overridden by ``MEMSYNC_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore")

    local: LocalSettings = Field(default_factory=LocalSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @property
    def one_shot_scan(self) -> str | None:
        """The scan a ``memsyncctl sync`` runs first: "full", "incremental" when only that one is on, None when off."""
        if self.sync.local_full_scan_interval_seconds > 0:
            return "full"
        if self.sync.local_scan_interval_seconds > 0:
            return "incremental"
        return None

    @property
    def cloud_user_id(self) -> str:
        """``cloud.user_id``, defaulting to ``local.user_id``."""
        return self.cloud.user_id or self.local.user_id

    @property
    def pair_key(self) -> str:
        """A short id of the pair of stores this config syncs: the OpenMemory user and the mem0 scope.

        Roots whose configs name the same pair share one run lock, so their syncs never overlap.
        """
        parts = [self.local.url.rstrip("/"), self.local.user_id, self.cloud.url.rstrip("/"), self.cloud_user_id,
                 self.cloud.agent_id, self.cloud.app_id, self.cloud.org_id, self.cloud.project_id]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:16]


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def load_settings(paths: Paths) -> Settings:
    """Load and validate settings for a root.

    Raises:
        ConfigError: naming the file (or environment variable), the key and what was expected.
    """
    data: dict[str, Any] = {}
    try:
        raw = safe_files.read_text(paths.config)  # never through a symlink (SymlinkRefusedError, exit 6)
    except SymlinkRefusedError:
        raise
    except FileAccessError as exc:  # a directory or a FIFO where the config should be
        raise ConfigError(exc.message) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{paths.config}: cannot read the file ({exc}).") from None
    if raw is not None:
        try:
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{paths.config}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}). "
                "Fix the file; nothing was written."
            ) from None
        except RecursionError:
            raise ConfigError(f"{paths.config}: JSON nested too deeply to read. Fix the file; nothing was written.") \
                from None
        if not isinstance(data, dict):
            raise ConfigError(f"{paths.config}: expected a JSON object at the top level, got {type(data).__name__}.")
    return settings_from_dict(data, paths.config)


def load_trusted_settings(paths: Paths) -> Settings:
    """:func:`load_settings` for anything that touches the network: only from a trusted root.

    Raises:
        UntrustedRootError: the config was never trusted, changed since, or is not safely owned.
        ConfigError: naming the file (or environment variable), the key and what was expected.
    """
    from memsyncd.store.trust import require_trusted

    require_trusted(paths.root)
    return load_settings(paths)


def settings_from_dict(data: dict[str, Any], source: Path) -> Settings:
    """Validate a config document (plus the ``MEMSYNC_*`` overrides) the way :func:`load_settings` does.

    Raises:
        ConfigError: naming ``source`` (or the environment variable), the key and what was expected.
    """
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        key = ".".join(str(part) for part in loc) or "(top level)"
        env = _env_name(loc)
        where = f"environment variable {env}" if env in os.environ else str(source)
        raise ConfigError(
            f"{where}: key '{key}' is invalid: {first.get('msg')} (got {first.get('input')!r}). "
            "Fix it and retry; nothing was written."
        ) from None


def config_home() -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"


def key_file_path() -> Path:
    """Where ``memsyncctl init`` stores the mem0 key: ``$XDG_CONFIG_HOME/memsyncd/mem0_api_key``."""
    return config_home() / "memsyncd" / KEY_CREDENTIAL


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def find_api_key() -> tuple[SecretStr | None, str]:
    """The mem0 key and where it came from (a description for ``doctor``; never the key itself).

    Sources, first non-empty wins: ``MEM0_API_KEY``, ``$CREDENTIALS_DIRECTORY/mem0_api_key``
    (systemd ``LoadCredential=``), then the key file (:func:`key_file_path`).
    """
    value = os.environ.get(KEY_ENV, "").strip()
    if value:
        return SecretStr(value), f"the {KEY_ENV} environment variable"
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        value = _read_key_file(Path(cred_dir) / KEY_CREDENTIAL)
        if value:
            return SecretStr(value), f"$CREDENTIALS_DIRECTORY/{KEY_CREDENTIAL}"
    path = key_file_path()
    value = _read_key_file(path)
    if value:
        return SecretStr(value), str(path)
    return None, ""


def load_api_key() -> SecretStr | None:
    """The mem0 key from ``MEM0_API_KEY``, the systemd credential or the key file; None when none is set."""
    return find_api_key()[0]
