"""Refunds: partial or full returns of captured money, through the payment's gateway."""
