"""Shared by every process and by external tools: wire formats, config, state. Starts no loop."""
