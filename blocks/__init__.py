"""blocks of the delivery system."""
