"""`python -m agentbus.escalation`: the escalation service (consumers + approvals API) with uvicorn
on AGENTBUS_ESCALATION_HOST/PORT."""

import uvicorn
from agentbus.shared.settings import Settings

if __name__ == "__main__":
    s = Settings(service="escalation")
    uvicorn.run(
        "agentbus.escalation.app:app", host=s.escalation_host, port=s.escalation_port, log_level="warning"
    )
