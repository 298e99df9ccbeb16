"""`agentbus replay redrive` (being written)."""

from __future__ import annotations
