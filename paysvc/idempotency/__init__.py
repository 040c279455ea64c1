"""Idempotency keys with Stripe's semantics (see API.md "Idempotency")."""
