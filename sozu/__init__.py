"""sozu-py: a hot-reconfigurable reverse proxy that speaks Sōzu 2.x's command protocol."""

__version__ = "0.1.0"
