"""agentbus escalation service."""
