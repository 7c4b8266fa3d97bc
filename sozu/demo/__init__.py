"""Packaged demo files: `demo.toml`, a configuration to try sozu-py on one machine."""
