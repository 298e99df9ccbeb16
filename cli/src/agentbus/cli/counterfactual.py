"""`agentbus replay counterfactual` (being written)."""

from __future__ import annotations
