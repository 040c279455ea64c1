"""Disputes (chargebacks), filled from the gateway's dispute webhooks."""
