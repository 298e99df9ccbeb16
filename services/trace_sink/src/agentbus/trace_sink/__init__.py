"""agentbus trace_sink service."""
