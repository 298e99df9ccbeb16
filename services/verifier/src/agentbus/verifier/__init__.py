"""agentbus verifier service."""
