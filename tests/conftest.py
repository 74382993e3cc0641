"""Shared pytest fixtures for the hf_dendrites test suite."""

from hub_server import _local_hub_session, hub_server  # noqa: F401  (local Hub server fixtures)
