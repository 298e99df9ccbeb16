"""agentbus console service."""
