"""agentbus policy service."""
