"""Operational events: kill-switch control and dead letters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .envelope import Event, Model


class Switch(Model):
    scope: Literal["topic", "tool", "agent", "tenant", "global"]
    target: str
    engaged: bool
    reason: str
    actor: str


class ControlSwitchV1(Event):
    type: Literal["control.switch"] = "control.switch"
    version: Literal[1] = 1
    payload: Switch


class DeadLetter(Model):
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    original_b64: str = Field(description="the original message bytes, base64")
    reason: str
    error_type: Literal["malformed", "invalid", "unknown_type", "handler_failed"]
    consumer: str = Field(description="service and group that gave up on it")
    attempts: int = 1


class DeadLetterRecordedV1(Event):
    type: Literal["deadletter.recorded"] = "deadletter.recorded"
    version: Literal[1] = 1
    payload: DeadLetter
