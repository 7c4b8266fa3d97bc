"""Sans-io protocol pieces of the worker: bytes and decisions in, bytes out; no socket, no clock."""
