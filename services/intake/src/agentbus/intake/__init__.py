"""agentbus intake service."""
