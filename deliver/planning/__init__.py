"""Pure planning: decisions made from values, with no Prefect and no I/O."""
