"""The tamper-evident audit chain: sealing, verification, export.

Design
------
Entries are written in the caller's transaction (`AuditLog.record`) and, at insert, stamped with
a *pending MAC* over all their fields (see `audit.models`). Just after commit (and periodically),
`seal_pending` chains them: in one write unit of work it takes the unsealed entries in
(occurred_at, id) order, checks each pending MAC, and gives each a `seq` (last + 1) and a sealed
MAC = HMAC-SHA256(K, link || canonical(fields, seq)), where `link` = SHA-256 of the canonical
bytes of the previous entry (seq - 1). Sealers are serialized by the SQLite write lock
(BEGIN IMMEDIATE) or a PostgreSQL advisory lock; `seq` is also unique in the schema.

What `verify` catches, for someone with write access to the database but not the keys:
- an edited entry: its MAC no longer matches (and the next entry's link neither);
- a deleted entry: a gap in `seq` (or a missing first entry) at the next one;
- an inserted entry: it cannot carry a valid MAC, sealed or pending; a row inserted unsealed is
  never sealed (its pending MAC fails) and is reported; a legitimate entry left unsealed for
  longer than the grace period is reported too;
- reordering or renumbering: `seq` is inside the MAC.
What no chain without an outside anchor catches: cutting entries off the *end*. So the head
(`SEQ:ID` and its MAC) is published: the sealer logs it after each seal (JSON field
`audit_head`) and sets the gauge `paysvc_audit_head_sequence`; `paysvc audit head` prints it;
`check_head(seq, id)` (`paysvc audit verify --expect-head`) fails when that entry is no longer
in the chain or is another one. An operator keeps the published heads outside the database
(append-only) and verifies against the last one.

The chain key and key rotation
------------------------------
K = `keyring.derive("audit-chain", key_id)`: derived from a service key, never stored. Every MAC
is stored as "<key id>:<tag>", so it names the key it was made with, and the verifier derives K
for that id from the keyring (active or retired keys). New MACs always use the active key.

The link between entries is a key-independent digest (not the previous MAC), so each entry's MAC
can be recomputed on its own: `keys rotate` re-MACs sealed entries under the new active key, in
small batches, resumably, after checking each entry's current MAC under its old key (a tampered
entry is left as it is, never laundered). Once `keys status` shows no value and no MAC under a
retired key, that key can be dropped. Until then an old key keeps verifying the entries it
MACed, so rotating never breaks `audit verify`.

Rejected alternatives: deriving from the active key alone breaks every MAC at rotation; a
separate never-rotated chain key (or one wrapped and stored in the database) would not follow
the service keys and would stay valid forever after a leak; chaining previous MACs would make
re-MACing one entry invalidate all later ones, so rotation could not be batched or resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import repository
from paysvc.audit.integrity import (
    FIELDS,
    canonical,
    check_checkpoint,
    check_pending,
    check_sealed_bytes,
    checkpoint_mac,
    fields_of,
    link,
    link_of,
    sealed_mac,
    sealed_mac_bytes,
)
from paysvc.audit.models import AuditCheckpoint
from paysvc.background import Wakeable
from paysvc.clock import rfc3339
from paysvc.db.engine import Database
from paysvc.keys.keyring import Keyring

log = logging.getLogger(__name__)

SEAL_BATCH = 500
PACE = 0.5  # seconds: a busy sealer seals at most this often
PARALLEL_MIN = 20_000  # below this many entries one process verifies faster than spawning more
DEFAULT_GRACE = dt.timedelta(minutes=5)
EXPORT_COLUMNS = ("seq", *FIELDS, "mac")


# In the default registry: one per process, whatever the number of apps or sealers.
HEAD_SEQUENCE = Gauge(
    "paysvc_audit_head_sequence",
    "Sequence number of the newest sealed audit entry (record it outside to catch truncation)",
)


@dataclass(frozen=True, slots=True)
class Head:
    """The newest sealed entry: `SEQ:ID` and its MAC."""

    seq: int
    id: str
    mac: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.id}"


def parse_head(text: str) -> tuple[int, str]:
    """`SEQ:ID` (as `paysvc audit head` prints it) -> (seq, id); ValueError otherwise."""
    seq, sep, entry_id = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or not entry_id.startswith("aud_"):
        raise ValueError("expected SEQ:ID, e.g. 42:aud_...")
    return int(seq), entry_id


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad: str | None = None
    problem: str | None = None
    last_seq: int | None = None  # head of the chain: record it outside to detect truncation
    last_id: str | None = None
    head_digest: str | None = field(default=None, compare=False)  # for save_checkpoint


# --- sealing ---------------------------------------------------------------------------------


async def seal_pending(db: Database, keyring: Keyring, *, batch_size: int = SEAL_BATCH) -> int:
    """Chain every unsealed entry; returns how many were sealed. Safe to run concurrently."""
    sealed, _head = await seal(db, keyring, batch_size=batch_size)
    return sealed


async def seal(
    db: Database, keyring: Keyring, *, batch_size: int = SEAL_BATCH
) -> tuple[int, Head | None]:
    """`seal_pending`, also returning the head after the last batch that sealed something."""
    sealed, head, _tip = await _seal(db, keyring, batch_size, None)
    return sealed, head


@dataclass(frozen=True, slots=True)
class _Tip:
    """The head as a sealer last left it, with the link to it (the digest of its canonical
    bytes), so that the next seal needs no more than its (seq, id) to go on from it."""

    seq: int
    id: str
    link: bytes


@dataclass(frozen=True, slots=True)
class _Sealed:
    sealed: int
    cursor: tuple[dt.datetime, str] | None
    more: bool  # the batch was full: look again after `cursor`
    head: Head | None  # when this batch sealed something
    tip: _Tip | None


async def _seal(
    db: Database, keyring: Keyring, batch_size: int, tip: _Tip | None
) -> tuple[int, Head | None, _Tip | None]:
    total = 0
    head: Head | None = None
    cursor: tuple[dt.datetime, str] | None = None
    while True:

        async def work(
            session: AsyncSession,
            after: tuple[dt.datetime, str] | None = cursor,
            known: _Tip | None = tip,
        ) -> _Sealed:
            return await _seal_batch(session, keyring, after, batch_size, known)

        done = await db.run(work)
        total += done.sealed
        head = done.head or head
        cursor, tip = done.cursor, done.tip
        if not done.more:
            return total, head, tip


async def head(db: Database) -> Head | None:
    """The newest sealed entry, or None when nothing is sealed yet."""
    async with db.transaction(write=False) as session:
        entry = await repository.last_sealed(session)
        if entry is None or entry.seq is None:
            return None
        return Head(entry.seq, entry.id, entry.mac or "")


async def _seal_batch(
    session: AsyncSession,
    keyring: Keyring,
    after: tuple[dt.datetime, str] | None,
    limit: int,
    known: _Tip | None,
) -> _Sealed:
    """Chain up to `limit` unsealed entries after `after`, stored in one bulk UPDATE. The link
    to the head is taken from `known` when the head is still that entry (this sealer sealed
    it last), else computed from the stored head."""
    await repository.lock_chain(session)
    newest = await repository.newest_sealed(session)
    tip: _Tip | None = None
    if newest is not None and known is not None and (known.seq, known.id) == newest:
        tip = known
    elif newest is not None:
        stored = await repository.last_sealed(session)
        assert stored is not None and stored.seq is not None
        tip = _Tip(stored.seq, stored.id, link(fields_of(stored), stored.seq))
    seq, chain_link = (0, link(None, None)) if tip is None else (tip.seq, tip.link)
    rows = await repository.unsealed_batch(session, after, limit)
    seals: list[tuple[str, int, str]] = []
    for row in rows:
        fields = fields_of(row)
        problem = check_pending(keyring, row["mac"], fields)
        if problem is not None:
            # Not written by the service (or its stamp was altered): never chain it.
            log.warning("audit entry %s left unsealed: %s", row["id"], problem)
            continue
        seq += 1
        mac = sealed_mac(keyring, keyring.active_id, fields, seq, chain_link)
        seals.append((row["id"], seq, mac))
        chain_link = link(fields, seq)
        tip = _Tip(seq, row["id"], chain_link)
    await repository.store_seals(session, seals)
    cursor = (rows[-1]["occurred_at"], rows[-1]["id"]) if rows else after
    head = Head(seals[-1][1], seals[-1][0], seals[-1][2]) if seals else None
    return _Sealed(len(seals), cursor, len(rows) == limit, head, tip)


class AuditSealer(Wakeable):
    """Background sealer: `wake()` after a commit (cheap, never blocks), seals at least every
    `interval` seconds. Run `run()` as a task for the lifetime of the app; one per process is
    enough, several processes are safe.

    While commits keep coming, seals start at most every `pace` seconds, so the entries of
    many requests are chained in one transaction (each is sealed at most that much later;
    `verify` allows minutes). The sealer keeps the link to the head it sealed last, so a seal
    reads only the head's (seq, id), then the entries to seal as plain rows.

    Stop it with `stop()` and await the task: it finishes the seal in progress, seals once more
    (what the last requests wrote) and returns. Cancelling the task instead can interrupt a
    write transaction halfway, and on SQLite a connection abandoned inside BEGIN IMMEDIATE keeps
    the write lock until it is garbage-collected.
    """

    def __init__(
        self, db: Database, keyring: Keyring, interval: float = 5.0, pace: float = PACE
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.interval = interval
        super().__init__(pace)

    async def run(self) -> None:
        tip: _Tip | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            await self.paced()
            self._wake.clear()
            try:
                sealed, head, tip = await _seal(self.db, self.keyring, SEAL_BATCH, tip)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sealing the audit chain failed; will retry")
                tip = None
            else:
                if sealed and head is not None:
                    publish_head(head, sealed)
            if self._stopping and not self._wake.is_set():
                return  # stopped, and the last seal began after stop(): nothing left behind


def publish_head(head: Head, sealed: int) -> None:
    """The head after a seal, for an outside record: a JSON log line and the gauge."""
    HEAD_SEQUENCE.set(head.seq)
    log.info(
        "audit chain sealed %d entries; head %s",
        sealed,
        head,
        extra={"audit_head": str(head), "audit_head_mac": head.mac, "sealed": sealed},
    )


# --- verification ----------------------------------------------------------------------------


async def verify(
    db: Database,
    keyring: Keyring,
    *,
    grace: dt.timedelta = DEFAULT_GRACE,
    now: dt.datetime | None = None,
    workers: int = 1,
    from_checkpoint: bool = False,
    parallel_min: int = PARALLEL_MIN,
) -> VerifyResult:
    """Walk the chain in seq order (streaming), then the unsealed entries.

    `workers` > 1 splits the sealed range into that many seq ranges verified in parallel
    processes (each also reads the entry just before its range, for the link), when there are
    at least `parallel_min` entries. `from_checkpoint` starts after the latest checkpoint whose
    MAC verifies (see `save_checkpoint`) instead of at entry 1; entries before it are not
    re-read, so run a full verify now and then too."""
    now = now or dt.datetime.now(dt.UTC)
    async with db.transaction(write=False) as session:
        head = await repository.last_sealed(session)
        checkpoint = (
            await repository.latest_checkpoint(session, head.seq)
            if from_checkpoint and head is not None and head.seq is not None
            else None
        )
    start, digest = 1, None
    if checkpoint is not None:
        problem = check_checkpoint(
            keyring, checkpoint.mac, checkpoint.seq, checkpoint.entry_id, checkpoint.digest
        )
        if problem is not None:
            return VerifyResult(
                False, 0, checkpoint.entry_id, f"checkpoint at seq {checkpoint.seq}: {problem}"
            )
        start, digest = checkpoint.seq + 1, checkpoint.digest
    sealed = _RangeResult()
    if head is not None and head.seq is not None:
        ranges = split(start, head.seq, workers if head.seq - start + 1 >= parallel_min else 1)
        if len(ranges) <= 1:  # none: nothing sealed since the checkpoint (still re-checked)
            async with db.transaction(write=False) as session:
                sealed = await _verify_range(session, keyring, start, head.seq, digest)
        else:
            sealed = await _verify_in_processes(db.url, keyring, ranges, digest)
        if sealed.problem is not None:
            return VerifyResult(False, sealed.checked, sealed.first_bad, sealed.problem)
    checked = sealed.checked
    last_seq, last_id = sealed.last_seq, sealed.last_id
    async with db.transaction(write=False) as session:
        async for row in repository.stream_unsealed(session):
            checked += 1
            fields = fields_of(row)
            problem = check_pending(keyring, row["mac"], fields)
            if problem is not None:
                return VerifyResult(
                    False,
                    checked,
                    row["id"],
                    f"unsealed entry with a bad pending MAC ({problem}): inserted or edited "
                    "outside the service",
                    last_seq,
                    last_id,
                )
            occurred_at: dt.datetime = row["occurred_at"]
            if occurred_at < now - grace:
                return VerifyResult(
                    False,
                    checked,
                    row["id"],
                    f"entry still unsealed {now - occurred_at} after it was written "
                    "(is the sealer running?)",
                    last_seq,
                    last_id,
                )
    return VerifyResult(True, checked, None, None, last_seq, last_id, sealed.last_digest)


async def check_head(db: Database, seq: int, entry_id: str) -> str | None:
    """What is wrong with a head recorded earlier (`SEQ:ID`), or None when that entry is still
    the chain's entry `seq`: a `verify` that passes cannot see entries cut off the end."""
    async with db.transaction(write=False) as session:
        found = (await repository.by_seq(session, [seq])).get(seq)
    if found is None:
        return (
            f"the expected head {seq}:{entry_id} is missing: entries were cut off the end of "
            "the chain (or the head was recorded from another database)"
        )
    if found.id != entry_id:
        return (
            f"seq {seq} is {found.id}, not the expected head {entry_id}: the end of the chain "
            "was replaced"
        )
    return None


async def save_checkpoint(db: Database, keyring: Keyring, result: VerifyResult) -> bool:
    """Record a MACed checkpoint at the head a successful `verify` reached (False: nothing to
    record). The next `verify(from_checkpoint=True)` starts after it."""
    if not result.ok or result.last_seq is None or result.last_id is None:
        return False
    seq, entry_id, digest = result.last_seq, result.last_id, result.head_digest
    if digest is None:
        return False

    async def work(session: AsyncSession) -> None:
        await repository.save_checkpoint(
            session,
            AuditCheckpoint(
                seq=seq,
                entry_id=entry_id,
                digest=digest,
                mac=checkpoint_mac(keyring, seq, entry_id, digest),
                created_at=dt.datetime.now(dt.UTC),
            ),
        )

    await db.run(work)
    return True


@dataclass(frozen=True, slots=True)
class _RangeResult:
    checked: int = 0
    first_bad: str | None = None
    problem: str | None = None
    last_seq: int | None = None
    last_id: str | None = None
    last_digest: str | None = None  # hex link digest of the last entry checked


def split(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """low..high (inclusive) in at most `parts` consecutive ranges of (about) equal size."""
    size = max(1, -(-(high - low + 1) // max(1, parts)))
    return [(lo, min(high, lo + size - 1)) for lo in range(low, high + 1, size)]


async def _verify_range(
    session: AsyncSession, keyring: Keyring, low: int, high: int, digest: str | None
) -> _RangeResult:
    """Sealed entries low..high. The entry low - 1 is read for the link (and, when `digest`
    is given — a checkpoint's — must still have that digest). Each entry's canonical bytes are
    built once: for its own MAC and for the next entry's link."""
    checked, expected, previous_id = 0, low, None
    chain_link: bytes | None = link(None, None) if low == 1 else None
    rows = repository.stream_sealed_range(session, None if low == 1 else low - 1, high)
    async for row in rows:
        seq: int = row["seq"]
        canonical_bytes = canonical(fields_of(row), seq)
        if chain_link is None and seq == low - 1:  # the entry before the range
            chain_link = link_of(canonical_bytes)
            if digest is not None and chain_link.hex() != digest:
                return _RangeResult(
                    checked,
                    row["id"],
                    f"entry at seq {seq} changed since the checkpoint that recorded it",
                )
            previous_id = row["id"]  # the head, when nothing follows it in the range
            continue
        checked += 1
        if chain_link is None or seq != expected:
            missing = low - 1 if chain_link is None else expected
            return _RangeResult(checked, row["id"], _gap(missing, seq))
        problem = check_sealed_bytes(keyring, row["mac"], canonical_bytes, chain_link)
        if problem is not None:
            return _RangeResult(
                checked,
                row["id"],
                f"{problem} at seq {seq}: entry edited or forged, or the entry before it was "
                "replaced",
            )
        chain_link, expected, previous_id = link_of(canonical_bytes), seq + 1, row["id"]
    if expected <= high:  # the range ended early: name the entry after the hole
        after = await repository.next_sealed(session, expected)
        if after is not None:
            return _RangeResult(checked + 1, after[1], _gap(expected, after[0]))
    last_digest = chain_link.hex() if chain_link is not None else None
    return _RangeResult(checked, None, None, high, previous_id, last_digest)


def _gap(expected: int, found: int) -> str:
    return (
        f"gap in the chain: expected seq {expected}, found {found} "
        "(entries deleted before this one)"
    )


def _verify_range_process(
    url: str, keyring: Keyring, low: int, high: int, digest: str | None
) -> _RangeResult:
    """One range, in a worker process with its own engine."""

    async def run() -> _RangeResult:
        db = Database(url, keyring)
        try:
            async with db.transaction(write=False) as session:
                return await _verify_range(session, keyring, low, high, digest)
        finally:
            await db.engine.dispose()  # read-only: no PRAGMA optimize from a verifier

    return asyncio.run(run())


async def _verify_in_processes(
    url: str, keyring: Keyring, ranges: list[tuple[int, int]], digest: str | None
) -> _RangeResult:
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")  # never fork a process holding an engine
    with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
        results = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool, _verify_range_process, url, keyring, lo, hi, digest if n == 0 else None
                )
                for n, (lo, hi) in enumerate(ranges)
            )
        )
    checked = 0
    for result in results:  # the first problem in seq order, as a serial walk would report
        checked += result.checked
        if result.problem is not None:
            return _RangeResult(checked, result.first_bad, result.problem)
    last = results[-1]
    return _RangeResult(checked, None, None, last.last_seq, last.last_id, last.last_digest)


# --- key rotation support --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemacBatch:
    changes: list[tuple[str, str, str]]  # (entry id, current MAC, MAC under the active key)
    skipped: int  # entries whose current MAC does not verify: left for `verify` to report
    last_seq: int | None  # cursor for the next batch; None when nothing was left


async def remac_batch(
    session: AsyncSession, keyring: Keyring, *, after_seq: int, limit: int
) -> RemacBatch:
    """The new MACs of the sealed entries after `after_seq` (up to `limit` of them) not yet
    under the active key (read only: store them with `store_macs` in a short write unit of
    work). Each entry's current MAC is checked under its own key first. Reads the seq range as
    plain rows, the entry at `after_seq` included for the first link: each entry's canonical
    bytes are built once (its MAC, the next entry's link)."""
    active = keyring.active_id
    changes: list[tuple[str, str, str]] = []
    skipped, last_seq = 0, None
    chain_link: bytes | None = link(None, None) if after_seq == 0 else None
    previous_seq = after_seq
    low = after_seq if after_seq > 0 else None
    async for row in repository.stream_sealed_range(session, low, after_seq + limit):
        seq: int = row["seq"]
        canonical_bytes = canonical(row, seq)
        if seq == after_seq:  # the entry before the range: its link only
            chain_link = link_of(canonical_bytes)
            continue
        last_seq = seq
        this_link = chain_link if seq == previous_seq + 1 else None  # None: a gap before it
        chain_link, previous_seq = link_of(canonical_bytes), seq
        mac: str | None = row["mac"]
        if mac is not None and mac.startswith(f"{active}:"):
            continue
        if this_link is None:
            skipped += 1
            continue
        problem = check_sealed_bytes(keyring, mac, canonical_bytes, this_link)
        if problem is not None or mac is None:
            log.warning("audit entry %s not re-MACed: %s", row["id"], problem)
            skipped += 1
            continue
        new_mac = sealed_mac_bytes(keyring, active, canonical_bytes, this_link)
        changes.append((row["id"], mac, new_mac))
    if last_seq is None:  # past the end (or a hole as long as `limit`): look further
        following = await repository.next_sealed(session, after_seq + 1)
        if following is None:
            return RemacBatch([], 0, None)
        last_seq = following[0] - 1  # the next batch starts at that entry (a gap: skipped)
    return RemacBatch(changes, skipped, last_seq)


async def store_macs(session: AsyncSession, changes: list[tuple[str, str, str]]) -> None:
    """Compare-and-set: an entry whose MAC changed since it was read keeps its MAC."""
    await repository.replace_macs(session, changes)


async def count_to_remac(session: AsyncSession, keyring: Keyring) -> int:
    return await repository.count_sealed_not_under_key(session, keyring.active_id)


async def sealed_head(db: Database) -> int:
    """The seq of the newest sealed entry (0 when none is)."""
    async with db.transaction(write=False) as session:
        newest = await repository.newest_sealed(session)
    return 0 if newest is None else newest[0]


async def key_usage(db: Database) -> dict[str, int]:
    """Sealed audit MACs per key id (a key still listed here is needed by `audit verify`)."""
    async with db.transaction(write=False) as session:
        return await repository.mac_key_usage(session)


# --- export and listing ----------------------------------------------------------------------


def _export_record(row: Mapping[str, Any]) -> dict[str, Any]:
    record = {name: row[name] for name in EXPORT_COLUMNS}
    record["occurred_at"] = rfc3339(row["occurred_at"])
    return record


async def export(
    db: Database,
    out: TextIO,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    fmt: Literal["jsonl", "csv"] = "jsonl",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write entries with since <= occurred_at < until, oldest first; returns the count.

    jsonl: one object per line, `details` as a JSON object. csv: a header row, then one row per
    entry, `details` as its JSON text. Streams in constant memory; `progress(count)` is called
    every few hundred rows and at the end.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}")
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    count = 0
    async with db.transaction(write=False) as session:
        async for row in repository.stream_between(session, since, until):
            record = _export_record(row)
            if writer is not None:
                writer.writerow(["" if record[c] is None else record[c] for c in EXPORT_COLUMNS])
            else:
                try:
                    record["details"] = json.loads(record["details"])
                except (TypeError, ValueError):
                    pass  # export what is stored, even if it is not JSON
                out.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
            if progress is not None and count % repository.STREAM_CHUNK == 0:
                progress(count)
    if progress is not None:
        progress(count)
    return count
