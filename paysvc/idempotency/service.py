"""Idempotency keys, Stripe's semantics:

- the first request with a key claims it: an `in_flight` row committed in its own unit of
  work, before anything executes;
- when it finishes, its status and body are stored (`done`) and replayed to every later
  request with the same key and the same method, path and body;
- a different request under the same key is a 422; the same key while the first is still
  running is a 409 `idempotency_key_in_use`;
- a request rejected before it executed is released (the row deleted) so the key can be
  used again;
- phase 1 of the execution records on the row what it created (`attach_resource`: the
  operation, or the payment of a new intent), in the same unit of work;
- an `in_flight` row older than `stale_after` (the idempotency take-over, `Timing`) belongs to
  a request that crashed or hung. If it recorded a resource, the next request with the key
  re-attaches to it (`Reattach`: the completer finishes the operation and the answer is the
  one a first success would have given); the handler never runs twice for one key. If it
  recorded nothing, nothing was done: the next request takes the key over and executes.
- a request that failed because the database was unreachable is released as soon as the
  database answers again (`release(..., outage=True)`): the key is free, or, if its phase 1
  had committed, re-attachable at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.errors import IdempotencyError, InvalidRequest
from paysvc.idempotency.models import IdempotencyKey, KeyState
from paysvc.idempotency.repository import IdempotencyRepository
from paysvc.ids import new_id

log = logging.getLogger(__name__)
STALE_AFTER = dt.timedelta(seconds=60)
RETENTION = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255
_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A request carrying an Idempotency-Key, as the idempotency layer sees it."""

    principal: str
    key: str
    method: str
    path: str
    fingerprint: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """This request owns the key and must execute; `locked_at` identifies this execution."""

    record_id: str
    locked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Reattach:
    """A retry of a crashed execution that had recorded `resource_id` in its phase 1: answer
    with that resource's outcome (or 409 while unresolved); never execute again."""

    record_id: str
    locked_at: dt.datetime | None
    resource_id: str
    path: str


# The claim of the request being executed, for `attach_resource` (set by the middleware).
CURRENT_CLAIM: ContextVar[Claim | None] = ContextVar("paysvc_idempotency_claim", default=None)


async def attach_resource(session: AsyncSession, resource_id: str) -> None:
    """Phase 1 of a keyed request: record on its Idempotency-Key row, in the caller's unit of
    work, the operation (or resource) it created. No-op without a key."""
    claim = CURRENT_CLAIM.get()
    if claim is not None:
        await IdempotencyRepository(session).attach(claim.record_id, claim.locked_at, resource_id)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: str
    request_id: str | None


def valid_key(key: str) -> bool:
    """1-255 printable ASCII characters (space to tilde)."""
    return 1 <= len(key) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in key)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """sha256 of method, path and the body as canonical JSON (key order and whitespace do not
    matter); a body that is not JSON is hashed as it is."""
    try:
        canonical = json.dumps(
            json.loads(body) if body.strip() else {},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        audit: AuditLog,
        *,
        stale_after: dt.timedelta = STALE_AFTER,
        retention: dt.timedelta = RETENTION,
    ) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.stale_after = stale_after
        self.retention = retention
        self._unreleased: list[Claim] = []  # releases the database was down for

    async def begin(self, request: KeyedRequest) -> Claim | StoredResponse | Reattach:
        """Claim the key (execute), return the stored response (replay), or the resource to
        re-attach to; raises IdempotencyError when the key is in use or was used for a
        different request."""
        await self._release_leftovers()
        for attempt in range(1, _CLAIM_ATTEMPTS + 1):
            try:
                return await self.db.run(lambda session: self._claim(session, request))
            except IntegrityError:
                # Another request inserted the same (principal, key) first; look again.
                if attempt == _CLAIM_ATTEMPTS:
                    raise in_use() from None
        raise AssertionError("unreachable")

    async def _claim(
        self, session: AsyncSession, request: KeyedRequest
    ) -> Claim | StoredResponse | Reattach:
        repo = IdempotencyRepository(session)
        now = self.clock.now()
        record = await repo.find(request.principal, request.key)
        if record is None:
            record = IdempotencyKey(
                id=new_id("idk"),
                principal=request.principal,
                key=request.key,
                method=request.method,
                path=request.path,
                fingerprint=request.fingerprint,
                state=KeyState.IN_FLIGHT,
                locked_at=now,
                request_id=request.request_id,
                created_at=now,
                updated_at=now,
            )
            repo.add(record)
            await session.flush()
            return Claim(record.id, now)
        if record.fingerprint != request.fingerprint:
            raise IdempotencyError(
                "This Idempotency-Key was already used with a different request "
                f"({record.method} {record.path} with other parameters)",
                code="idempotency_key_reused",
            )
        if record.state == KeyState.DONE and record.response_status is not None:
            return StoredResponse(
                record.response_status, record.response_body or "", record.request_id
            )
        if record.locked_at is not None and now - record.locked_at < self.stale_after:
            raise in_use()
        if record.resource_id is not None:
            return Reattach(record.id, record.locked_at, record.resource_id, record.path)
        # The execution that held the key crashed or hung before doing anything: take it over.
        record.locked_at = now
        record.request_id = request.request_id
        record.updated_at = now
        return Claim(record.id, now)

    async def complete(self, claim: Claim, status: int, body: str) -> None:
        """Store the result of an execution for replay."""

        async def work(session: AsyncSession) -> None:
            record = await self._owned(session, claim)
            if record is None:
                return
            record.state = KeyState.DONE
            record.response_status = status
            record.response_body = body
            record.locked_at = None
            record.updated_at = self.clock.now()

        await self.db.run(work)

    async def complete_reattached(self, reattach: Reattach, status: int, body: str) -> None:
        """Store the outcome a re-attached retry answered with, for later replays."""

        async def work(session: AsyncSession) -> None:
            record = await IdempotencyRepository(session).get(reattach.record_id)
            if record is None or record.state != KeyState.IN_FLIGHT:
                return
            record.state = KeyState.DONE
            record.response_status = status
            record.response_body = body
            record.locked_at = None
            record.updated_at = self.clock.now()

        await self.db.run(work)

    async def forget(self, reattach: Reattach) -> None:
        """A re-attached request whose first attempt certainly did nothing: free the key."""

        async def work(session: AsyncSession) -> None:
            repo = IdempotencyRepository(session)
            record = await repo.get(reattach.record_id)
            if record is not None and record.state == KeyState.IN_FLIGHT:
                await repo.remove(record)

        await self.db.run(work)

    async def release(self, claim: Claim, *, outage: bool = False) -> None:
        """Forget a request that was rejected before it executed: the key is free again.
        After a database outage (`outage`), a request whose phase 1 had committed is made
        re-attachable at once instead; if the database is still down, the release is kept
        and done before the next claim."""
        if not outage:
            await self._release(claim, outage=False)
            return
        try:
            await self._release(claim, outage=True)
        except Exception:
            log.warning("database unreachable: the key's release waits for it")
            self._unreleased.append(claim)

    async def _release(self, claim: Claim, *, outage: bool) -> None:
        async def work(session: AsyncSession) -> None:
            record = await self._owned(session, claim)
            if record is None:
                return
            if outage and record.resource_id is not None:
                record.locked_at = None  # the next retry re-attaches, without waiting
                record.updated_at = self.clock.now()
            else:
                await IdempotencyRepository(session).remove(record)

        await self.db.run(work)

    async def _release_leftovers(self) -> None:
        while self._unreleased:
            await self._release(self._unreleased[0], outage=True)  # raises while still down
            self._unreleased.pop(0)

    async def purge(self, actor: Actor, older_than: dt.timedelta | None = None) -> int:
        """Delete keys created more than `older_than` ago (at least the retention, 24 h)."""
        older_than = self.retention if older_than is None else older_than
        if older_than < self.retention:
            raise InvalidRequest(
                f"keys are kept at least {_hours(self.retention)}; "
                f"older_than must be {_hours(self.retention)} or more",
                param="older_than",
            )

        async def work(session: AsyncSession) -> int:
            removed = await IdempotencyRepository(session).purge_created_before(
                self.clock.now() - older_than
            )
            self.audit.record(
                session,
                actor,
                "idempotency.purge",
                "idempotency_key",
                None,
                details={"removed": removed, "older_than_seconds": int(older_than.total_seconds())},
            )
            return removed

        return await self.db.run(work)

    @staticmethod
    async def _owned(session: AsyncSession, claim: Claim) -> IdempotencyKey | None:
        """The row, if this execution still owns it (nobody took it over meanwhile)."""
        record = await IdempotencyRepository(session).get(claim.record_id)
        if record is None or record.state != KeyState.IN_FLIGHT:
            return None
        if record.locked_at != claim.locked_at:
            return None
        return record


def in_use() -> IdempotencyError:
    return IdempotencyError(
        "A request with this Idempotency-Key is still being processed; retry later",
        code="idempotency_key_in_use",
        http_status=409,
    )


def _hours(delta: dt.timedelta) -> str:
    return f"{int(delta.total_seconds() // 3600)}h"
