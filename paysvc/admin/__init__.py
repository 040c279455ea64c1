"""Admin use cases: transaction reporting and status corrections."""
