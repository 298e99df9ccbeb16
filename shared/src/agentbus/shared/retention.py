"""How long each tenant's tickets are kept: policies/tenants.toml, else the bundles' retention_days."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

TENANTS_FILE = "tenants.toml"
UNCLASSIFIED = "*"  # tickets no workflow took (never classified, or no workflow fits)


class RetentionConfigError(ValueError):
    """The tenants file cannot be used; the message says where and what to fix."""


@dataclass(frozen=True)
class RetentionPolicy:
    """A ticket is kept for its tenant's retention_days when the tenants file sets one, else for its
    workflow bundle's. A ticket with no workflow is kept for the longest any bundle asks, since nothing
    says which promise applies to it."""

    tenants: Mapping[str, int]  # tenant id -> days, from the tenants file
    workflows: Mapping[str, int]  # workflow -> days, from the bundles

    def __post_init__(self) -> None:
        if not self.workflows:
            # Without them a tenant the file does not name would have no retention, not "keep forever".
            raise RetentionConfigError("no workflow bundles: their retention_days are the default retention")

    def days(self, tenant: str, workflow: str | None) -> int:
        if tenant in self.tenants:
            return self.tenants[tenant]
        if workflow is not None and workflow in self.workflows:
            return self.workflows[workflow]
        return self.longest

    @property
    def longest(self) -> int:
        return max(self.workflows.values())

    def cutoffs(self, tenant: str, now: datetime) -> dict[str, datetime]:
        """By workflow (UNCLASSIFIED for the rest): tickets whose last event was recorded before it expire.
        One entry when the tenant has its own retention."""
        if tenant in self.tenants:
            return {UNCLASSIFIED: now - timedelta(days=self.tenants[tenant])}
        cutoffs = {w: now - timedelta(days=d) for w, d in sorted(self.workflows.items())}
        return cutoffs | {UNCLASSIFIED: now - timedelta(days=self.longest)}


def load_tenants(path: Path) -> dict[str, int]:
    """`[tenants.<id>] retention_days = N` from `path`; every problem is a RetentionConfigError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RetentionConfigError(f"{path}: no such tenants file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RetentionConfigError(f"{path}: cannot read it ({exc})") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RetentionConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"tenants"})
    if unknown:
        raise RetentionConfigError(f"{path}: unknown top-level key {unknown[0]!r}; expected [tenants.<id>]")
    tenants = data.get("tenants", {})
    if not isinstance(tenants, dict):
        raise RetentionConfigError(f"{path}: `tenants` must be a table of [tenants.<id>] tables")
    days: dict[str, int] = {}
    for tenant, entry in tenants.items():
        where = f"{path}: [tenants.{tenant}]"
        if not isinstance(entry, dict):
            raise RetentionConfigError(f"{where} must be a table with retention_days = <days>")
        extra = sorted(set(entry) - {"retention_days"})
        if extra:
            raise RetentionConfigError(f"{where}: unknown key {extra[0]!r}; only retention_days is read")
        value = entry.get("retention_days")
        if value is None:
            raise RetentionConfigError(f"{where}: retention_days is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RetentionConfigError(
                f"{where}: retention_days must be a whole number of days >= 1, not {value!r}"
            )
        days[tenant] = value
    return days
