"""Reconciliation: compare our payments with the gateway's truth and settle the difference."""
