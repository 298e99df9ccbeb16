"""`python -m agentbus.console`: serve the console with uvicorn on AGENTBUS_CONSOLE_HOST/PORT."""

import uvicorn
from agentbus.shared.settings import Settings

if __name__ == "__main__":
    s = Settings(service="console")
    uvicorn.run("agentbus.console.app:app", host=s.console_host, port=s.console_port, log_level="warning")
