"""Console access: bearer token (header or session cookie) → identity and console roles.

Roles: `viewer` reads everything; `approver` may approve or reject (the approvals API then checks
the approval's own role, e.g. refund-approver); `operator` may engage and release kill switches.
Tokens come from configuration (see config.py); they are compared by SHA-256 (shared.identities).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
from agentbus.shared.identities import Identities, Identity, IdentityError, bearer_token
from agentbus.shared.settings import Settings
from starlette.requests import HTTPConnection

from .config import ConsoleSettings

log = logging.getLogger("agentbus.console.auth")

ROLES = ("viewer", "approver", "operator")
COOKIE = "agentbus_console_token"
# What each write needs; reading needs any console role.
APPROVE, OPERATE = "approver", "operator"


@dataclass(frozen=True)
class Caller:
    identity: Identity
    token: str  # forwarded to the approvals API, which makes its own decision; never stored

    @property
    def roles(self) -> list[str]:
        return [r for r in ROLES if r in self.identity.roles]

    def may(self, role: str) -> bool:
        return role in self.identity.roles

    def as_json(self) -> dict[str, object]:
        return {"id": self.identity.id, "roles": self.roles}


class Refused(Exception):
    """A request without the right credentials: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def load_identities(console: ConsoleSettings, settings: Settings) -> Identities:
    path = console.tokens_path(settings)
    identities = Identities.load(path)
    if console.tokens:
        try:
            extra = orjson.loads(console.tokens)
        except orjson.JSONDecodeError as exc:
            raise IdentityError(f"AGENTBUS_CONSOLE_TOKENS: not JSON ({exc})") from exc
        data = {"identities": extra} if isinstance(extra, list) else extra
        identities = identities.merged(
            Identities.from_data(data, "AGENTBUS_CONSOLE_TOKENS"), "AGENTBUS_CONSOLE_TOKENS"
        )
    if not len(identities):
        log.warning("no console tokens configured (%s): every request will be refused", path)
    return identities


class Access:
    def __init__(self, identities: Identities) -> None:
        self.identities = identities

    def caller(self, conn: HTTPConnection) -> Caller:
        """The authenticated caller with at least one console role; raises Refused otherwise."""
        token = bearer_token(conn.headers.get("authorization")) or conn.cookies.get(COOKIE)
        if not token:
            raise Refused(401, "sign in: send Authorization: Bearer <token> (tokens are in identities.toml)")
        return self.by_token(token)

    def by_token(self, token: str) -> Caller:
        identity = self.identities.authenticate(token)
        if identity is None:
            raise Refused(401, "unknown token: it matches no console identity")
        caller = Caller(identity, token)
        if not caller.roles:
            raise Refused(403, f"{identity.id} has no console role (one of {', '.join(ROLES)})")
        return caller

    def require(self, caller: Caller, role: str, action: str) -> None:
        if not caller.may(role):
            have = ", ".join(caller.roles)
            raise Refused(
                403, f"to {action} you need the console role {role}; {caller.identity.id} has: {have}"
            )
