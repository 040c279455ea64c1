"""Standard Webhooks signatures (the `standardwebhooks` package, MIT): `webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
one signature per active secret, space-separated (rotation)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from standardwebhooks import Webhook


class Signer:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is needed")
        self._signers = [Webhook(secret) for secret in secrets]

    def headers(self, message_id: str, body: str) -> dict[str, str]:
        """Signed now by the wall clock: receivers check the timestamp against theirs."""
        at = dt.datetime.now(dt.UTC)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": " ".join(
                signer.sign(message_id, at, body) for signer in self._signers
            ),
        }
