"""agentbus reconciler service."""
