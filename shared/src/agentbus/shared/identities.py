"""Who may call the approvals API and the console: bearer tokens → identity and roles (`identities.toml`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .validation import problems

log = logging.getLogger("agentbus.identities")


class IdentityError(ValueError):
    """The identities file cannot be used; the message names the file and what to fix."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*:[^\s:]+$", description="e.g. user:alice")
    # A plain token (demo) or the hex sha256 of one (a file that holds no secrets).
    token: str | None = Field(default=None, min_length=8)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    roles: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def one_token(self) -> _Entry:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token or token_sha256")
        return self

    def digest(self) -> str:
        return self.token_sha256 or _sha256(self.token or "")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identities: list[_Entry] = Field(default_factory=list)


@dataclass(frozen=True)
class Identity:
    id: str
    roles: frozenset[str]

    def describe_roles(self) -> str:
        return ", ".join(sorted(self.roles)) or "none"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Identities:
    """Token digests → identities. Tokens are compared by their SHA-256, never stored by value."""

    def __init__(self, by_digest: dict[str, Identity]) -> None:
        self._by_digest = by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def parse(cls, text: str, source: str = "identities.toml") -> Identities:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise IdentityError(f"{source}: not valid TOML ({exc})") from exc
        return cls.from_data(raw, source)

    @classmethod
    def from_data(cls, raw: object, source: str) -> Identities:
        """Identities from already-decoded data shaped like the file: {"identities": [{id, token|
        token_sha256, roles}, …]} (e.g. JSON from an environment variable)."""
        try:
            data = _File.model_validate(raw)
        except ValidationError as exc:
            raise IdentityError(f"{source}: {problems(exc)}") from exc
        by_digest: dict[str, Identity] = {}
        for entry in data.identities:
            digest = entry.digest()
            if digest in by_digest:
                raise IdentityError(f"{source}: {entry.id} reuses the token of {by_digest[digest].id}")
            by_digest[digest] = Identity(entry.id, frozenset(entry.roles))
        return cls(by_digest)

    @classmethod
    def load(cls, path: Path) -> Identities:
        """The file's identities; a missing file means nobody may call the API (logged)."""
        if not path.exists():
            log.warning("no identities file at %s: every approvals API call will be refused", path)
            return cls({})
        return cls.parse(path.read_text(), str(path))

    def merged(self, other: Identities, source: str) -> Identities:
        """These identities and `other`'s; a token both give must name the same identity."""
        by_digest = dict(self._by_digest)
        for digest, identity in other._by_digest.items():
            if by_digest.get(digest, identity) != identity:
                raise IdentityError(f"{source}: {identity.id} reuses the token of {by_digest[digest].id}")
            by_digest[digest] = identity
        return Identities(by_digest)

    def authenticate(self, token: str | None) -> Identity | None:
        if not token:
            return None
        digest = _sha256(token)
        for known, identity in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return identity
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
