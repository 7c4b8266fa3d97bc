"""The `sozu` command line."""
