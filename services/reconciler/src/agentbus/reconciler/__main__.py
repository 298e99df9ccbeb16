"""`python -m agentbus.reconciler`: the reconciler service (see app.py)."""

import asyncio

from .app import main

if __name__ == "__main__":
    asyncio.run(main())
