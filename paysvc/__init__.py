"""paysvc: the payment service."""

__version__ = "0.1.0"
