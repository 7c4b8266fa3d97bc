"""The proxy process: one asyncio loop serving traffic with its own copy of the state."""
