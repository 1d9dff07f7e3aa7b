"""Settings: everything is read from the environment in base.py."""

from .base import *  # noqa: F403  # noqa: F401,F403
