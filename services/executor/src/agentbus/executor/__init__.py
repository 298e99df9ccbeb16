"""agentbus executor service."""
