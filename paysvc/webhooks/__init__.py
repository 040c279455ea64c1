"""Incoming webhooks: signature verification (and, later, the inbox)."""
