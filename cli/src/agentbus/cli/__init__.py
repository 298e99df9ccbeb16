"""agentbus command line and embedded runtime."""
