from tests.stripe_events import settings

__all__ = ["settings"]
