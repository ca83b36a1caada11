"""flows of the delivery system."""
