"""Servers only the sandbox runs: the team chat's inbox and the advisory mirror."""
