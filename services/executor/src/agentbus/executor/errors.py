"""How a tool call can fail, which decides whether it is retried and what the ledger records."""


class ToolError(Exception):
    """The system refused the call (bad request, business rule): final, not retried."""


class RetryableToolError(Exception):
    """A transient failure where the call did not take effect (5xx, 429, refused connection)."""


class UnknownOutcome(Exception):
    """The call may or may not have taken effect (timeout, dropped connection): retried with the
    same idempotency key; if retries run out, the ledger says 'unknown' until a retry resolves it."""
