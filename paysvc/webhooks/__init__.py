"""Incoming gateway webhooks: signature verification, the inbox, applying events."""
