"""deployments of the delivery system."""
