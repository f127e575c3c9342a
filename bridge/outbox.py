"""Delivers recorded changes to Pachca: claim -> render the latest -> send -> done/retry/dead.

Items of one incident run strictly in order (the store hands out only each incident's oldest),
and an edit renders the incident as it is *now*, so ten changes queued behind a slow Pachca
become one edit: the others find the message already up to date ("coalesced").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from bridge.alertmanager_api import AlertmanagerError, Why
from bridge.attempts import (
    CreateStep,
    content_digest,
    history_refused,
    may_land_late,
    message_gone,
    outcome_unknown,
    plan_create,
    posts_a_message,
    reply_key,
    said_key,
    wanted_keys,
)
from bridge.errors import (
    ClaimLost,
    PachcaAuthError,
    PachcaError,
    PachcaRateLimited,
    PachcaRequestError,
    RenderError,
    StoreError,
)
from bridge.incidents import Effect
from bridge.lookback import Lookback, LookbackCutShort, find_personal_chat
from bridge.metrics import Metrics
from bridge.model import Delivery, Incident
from bridge.pachca import PachcaApi, before_send
from bridge.ratelimit import urgency
from bridge.render import (
    ACTOR_SLOT,
    LINK_SLOT,
    Message,
    RenderOptions,
    message_url,
    person,
    render_message,
)
from bridge.rules import Rules
from bridge.store import OutboxItem, Store, Stored
from bridge.store.base import PRESS
from bridge.tasks import Pulse, cancel_and_wait
from bridge.timeline import Event, called
from bridge.users import UserNames

if TYPE_CHECKING:  # the silencer talks back to the inbox, which the outbox must not import
    from bridge.silencer import Silencer

# a silence request is tried this many times (a person is waiting for the answer)
SILENCE_ATTEMPTS = 3

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
# an item failing for a reason nobody foresaw is retried this many times, then dead-lettered
# so the incident's later items (its resolution) are not held behind it for ever
UNEXPECTED_ATTEMPTS = 8
# while Pachca refuses the token: one item is tried this often, the rest wait
AUTH_PROBE_SECONDS = 30.0
AUTH_LOG_EVERY_SECONDS = 60.0
# tries of the store write that records a sent item, before the item counts as not sent
FINISH_ATTEMPTS = 4
BASE_RETRY_DELAY = 1.0


NO_MESSAGE = Delivery()


class _NotYet(Exception):
    """This item must wait: an earlier call may still land (`why`)."""

    def __init__(self, not_before: float, why: str = "an earlier create may land") -> None:
        self.not_before = not_before
        self.why = why


def backoff(attempts: int, max_delay: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter x0.5-1.5: about 1 s, 2 s, 4 s ... capped at max_delay
    (the exponent too, so a thousand attempts cost no overflow)."""
    return min(max_delay, BASE_RETRY_DELAY * 2.0 ** min(attempts, 32)) * (0.5 + rng())


# what the timeline records of the outbox: operations on an incident's message and thread
TIMELINE_KINDS = frozenset(
    e.value
    for e in Effect
    if e not in (Effect.POST, Effect.UNFURL, Effect.DM, Effect.SILENCE, Effect.UNSILENCE)
)


@dataclass
class Outbox:
    store: Store
    pachca: PachcaApi
    rules: Rules
    render_options: RenderOptions
    metrics: Metrics
    users: UserNames
    silencer: Silencer | None = None
    concurrency: int = 8
    max_retry_delay: float = 300.0
    # how long after it was sent a create or edit of unknown outcome may still land
    create_settle: float = 30.0
    # how long another replica waits before taking over a claimed item (BRIDGE_CLAIM_TTL)
    claim_ttl: float = 60.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._stop_by: float | None = None  # monotonic deadline once shutting down
        self._auth_refused_at: float | None = None  # clock time Pachca last refused the token
        self._auth_logged_at = float("-inf")
        self.handled = 0  # outbox items finished (sent, retried or dead), for the stop line
        self.lookback = Lookback(self.pachca)  # chat history read for creates in doubt

    def wake(self) -> None:
        """Called by the inbox after a commit: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self, pulse: Pulse | None = None) -> None:
        """Deliver until stopped (see `shutdown`) or cancelled; `pulse` hears of every pass."""
        while True:
            try:
                delivered = await self.drain_once(pulse)
                self.handled += delivered
            except StoreError as exc:
                self.metrics.store_errors.inc()
                log.error("outbox: store unavailable: %s", exc)
                delivered = 0
            if pulse is not None:
                pulse.beat(0.0 if delivered else IDLE_POLL_SECONDS)
            if self._stop_by is not None and (not delivered or time.monotonic() > self._stop_by):
                return
            if not delivered:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 that loses a cancellation coming as
                # the inbox wakes it, and the loop would run on when stopped (CANCEL_AGAIN_AFTER)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await self._wake.wait()

    async def shutdown(self, task: asyncio.Task[None], grace: float) -> tuple[int, int]:
        """Deliver what is due for up to `grace` seconds, never cutting a send in half, then
        stop. What is left stays in the store for the next start. Returns (handled while
        draining, left)."""
        handled_before = self.handled
        self._stop_by = time.monotonic() + grace
        self._wake.set()
        await asyncio.wait({task}, timeout=grace + 1)
        await cancel_and_wait(task)  # nothing to do if it has ended
        depth = (await self.store.outbox_stats(self.clock())).depth
        return self.handled - handled_before, depth

    async def drain_once(self, pulse: Pulse | None = None) -> int:
        """Deliver until nothing is due; returns how many deliveries ended. Up to `concurrency`
        run at once, one per incident, and a slot is refilled as soon as its delivery ends: a
        slow call holds up its own incident only, and the pace is kept full. A StoreError stops
        the refilling and is raised once every delivery under way has ended, so a failure in
        one never hands out another that is still in flight."""
        running: dict[str, asyncio.Task[None]] = {}
        held_until: dict[str, float] = {}  # claim expiry (monotonic) of each running delivery
        abandoned: set[str] = set()
        keeper = asyncio.create_task(self._keep_claims(running, held_until, abandoned))
        handled = 0
        failure: BaseException | None = None
        try:
            while True:
                if failure is None:
                    await self._refill(running, held_until)
                if not running:
                    break
                for ref in await self._ended(running):
                    task = running.pop(ref)
                    held_until.pop(ref, None)
                    if task.cancelled():
                        if ref in abandoned:
                            abandoned.discard(ref)  # its item stays due for the claim's holder
                            continue
                        failure = failure or asyncio.CancelledError()
                    elif (exc := task.exception()) is not None:
                        failure = failure or exc  # StoreError: deliver contains the rest
                    else:
                        handled += 1
                if pulse is not None:
                    pulse.beat()
        finally:
            await cancel_and_wait(keeper, *running.values())
        if failure is not None:
            raise failure
        return handled

    def _slots(self) -> int:
        """How many deliveries may run now: none past the shutdown deadline; while Pachca
        refuses the token, none, then one probe every AUTH_PROBE_SECONDS."""
        if self._stop_by is not None and time.monotonic() > self._stop_by:
            return 0
        if self._auth_refused_at is None:
            return self.concurrency
        return 0 if self.clock() < self._auth_refused_at + AUTH_PROBE_SECONDS else 1

    async def _refill(self, running: dict[str, asyncio.Task[None]], held: dict[str, float]) -> None:
        """Start deliveries of due items into the free slots, skipping incidents under way
        (their head item is the one running)."""
        free = self._slots() - len(running)
        if free <= 0:
            return
        self._wake.clear()  # a commit after this query wakes the wait below for another
        claimed_at = time.monotonic()
        items = await self.store.due_items(self.clock(), free + len(running))
        for item in [i for i in items if i.ref not in running][:free]:
            held[item.ref] = claimed_at + self.claim_ttl
            running[item.ref] = asyncio.create_task(self.deliver(item))

    async def _ended(self, running: dict[str, asyncio.Task[None]]) -> list[str]:
        """Wait until a delivery ends, or, with a slot free, until the inbox commits more;
        returns the incidents whose deliveries ended."""
        waiting: set[asyncio.Future[Any]] = set(running.values())
        woken = None
        if len(running) < self._slots():
            woken = asyncio.ensure_future(self._wake.wait())
            waiting.add(woken)
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if woken is not None:
                woken.cancel()
        return [ref for ref, task in running.items() if task.done()]

    async def _keep_claims(
        self,
        deliveries: dict[str, asyncio.Task[None]],
        held_until: dict[str, float],
        abandoned: set[str],
    ) -> None:
        """Renew the claims of the deliveries still running (several replicas), so no other
        replica takes an item whose delivery is under way, however long it takes. A delivery
        whose claim is gone, or cannot be renewed before it lapses (Redis unreachable), is
        stopped: another replica may take its item, and two must never send at once. A create
        stopped that way was recorded as sent first, so the next attempt looks for it."""
        if not self.store.claims_lapse:
            return
        stopping: set[asyncio.Task[None]] = set()  # abandoned deliveries being stopped
        try:
            while True:
                await asyncio.sleep(self.claim_ttl / 3)
                refs = sorted(ref for ref, task in deliveries.items() if not task.done())
                asked_at = time.monotonic()
                try:
                    held = set(await self.store.hold(refs))
                except StoreError as exc:
                    log.warning("outbox: could not renew claims: %s", exc)
                else:
                    for ref in refs:
                        held_until[ref] = asked_at + self.claim_ttl if ref in held else 0.0
                # stop before the next renewal could come too late
                deadline = time.monotonic() + self.claim_ttl / 2
                for ref in refs:
                    task = deliveries.get(ref)  # None: it ended during the renewal
                    if task is None or task.done() or ref in abandoned:
                        continue
                    if held_until[ref] < deadline:  # not renewed in time
                        abandoned.add(ref)
                        stopping.add(self._abandon(ref, task))
        finally:
            await cancel_and_wait(*stopping)

    def _abandon(self, ref: str, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Stop the delivery of incident `ref`, whose claim could not be kept: cancelled until
        it ends (a lost cancellation would let it send on while another replica holds its
        claim). Returns the task doing that."""
        log.error(
            "outbox: the claim on incident %s could not be kept; its delivery "
            "stops and is taken up again by whoever holds the claim",
            ref,
        )
        self.metrics.deliveries_abandoned.inc()
        return asyncio.create_task(cancel_and_wait(task))

    async def deliver(self, item: OutboxItem) -> None:
        """Deliver one item. Whatever goes wrong stays with this item: it is retried with
        backoff or dead-lettered. Only StoreError passes (the store is the caller's concern)."""
        try:
            with urgency(item.priority == PRESS):  # someone waits for it: its calls go first
                await self._deliver(item)
        except ClaimLost as exc:
            log.warning(
                "outbox: %s of incident %s: %s; its result is dropped", item.kind, item.ref, exc
            )
        except (StoreError, asyncio.CancelledError):
            raise
        except RenderError as exc:
            log.error("outbox: %s of incident %s cannot be rendered: %s", item.kind, item.ref, exc)
            self.metrics.deliveries.labels(item.kind, "dead").inc()
            await self.store.dead_letter(item, f"cannot render: {exc}", self.clock())
        except Exception as exc:
            log.exception("outbox: %s of incident %s failed unexpectedly", item.kind, item.ref)
            error = f"{type(exc).__name__}: {exc}"
            if item.attempts + 1 >= UNEXPECTED_ATTEMPTS:
                self.metrics.deliveries.labels(item.kind, "dead").inc()
                await self.store.dead_letter(item, error, self.clock())
            else:
                await self._retry_later(item, error, backoff(item.attempts, self.max_retry_delay))

    def _token_refused(self, exc: PachcaAuthError) -> None:
        now = self.clock()
        self._auth_refused_at = now
        self.metrics.pachca_auth_ok.set(0)
        if time.monotonic() - self._auth_logged_at >= AUTH_LOG_EVERY_SECONDS:
            self._auth_logged_at = time.monotonic()
            log.error(
                "Pachca refuses the bot token (%s): delivery is paused, nothing is dropped; "
                "check PACHCA_TOKEN. Trying again every %.0fs",
                exc,
                AUTH_PROBE_SECONDS,
            )

    def _token_accepted(self) -> None:
        if self._auth_refused_at is not None:
            log.warning("Pachca accepts the bot token again: delivery resumes")
        self._auth_refused_at = None
        self.metrics.pachca_auth_ok.set(1)

    async def _deliver(self, item: OutboxItem) -> None:
        started = time.monotonic()
        stored = await self.store.load_by_ref(item.ref)
        if stored is None and item.kind not in (Effect.DM, Effect.POST, Effect.UNFURL):
            log.warning("outbox: incident %s is gone; dropping %s", item.ref, item.kind)
            await self.store.finish_item(item.id)
            return
        if item.kind in (Effect.SILENCE, Effect.UNSILENCE) and stored is not None:
            await self._ask_alertmanager(item, stored)
            return
        shown: Delivery | None = None  # what Pachca shows now, recorded with the finish
        try:
            self._wait_for_unsettled(item)
            if item.kind == Effect.DM:
                result = await self._send_dm(item)
            elif item.kind == Effect.POST:
                result = await self._send_post(item, stored)
            elif item.kind == Effect.UNFURL:
                request = json.loads(item.content)
                with self._calling(item):
                    await self.pachca.link_previews(int(request["message_id"]), request["previews"])
                result = "sent"
            else:
                assert stored is not None
                result, shown = await self._send(item, stored)
        except _NotYet as wait:
            await self.store.retry_item(item.id, wait.not_before, wait.why)
            return
        except PachcaAuthError as exc:
            self._token_refused(exc)
            await self._retry_later(item, str(exc), AUTH_PROBE_SECONDS)
            return
        except PachcaRequestError as exc:
            log.error(
                "outbox: Pachca refused %s of incident %s for good: %s", item.kind, item.ref, exc
            )
            self.metrics.deliveries.labels(item.kind, "dead").inc()
            note = self._note(item, "dead", error=str(exc))
            await self.store.dead_letter(item, str(exc), self.clock(), note)
            return
        except PachcaError as exc:
            delay = (
                exc.retry_after
                if isinstance(exc, PachcaRateLimited) and exc.retry_after is not None
                else backoff(item.attempts, self.max_retry_delay)
            )
            if may_land_late(exc, posting=posts_a_message(item.kind)):
                delay = max(delay, self.create_settle)  # until that call could have landed
            await self._retry_later(item, str(exc), delay)
            return
        if result in ("sent", "reconciled"):
            self._token_accepted()
        note = self._note(item, result, started, incident_known=stored is not None)
        calls = self._called(item, stored) if result == "sent" else []
        if note is not None and calls:
            note = Event(note.at, note.kind, {**note.details, "called": " ".join(calls)})
        log.info(
            "delivered %s of incident %s: %s in %.0f ms (%.1fs after it was recorded)",
            item.kind,
            item.ref,
            result,
            (time.monotonic() - started) * 1000,
            max(0.0, self.clock() - item.created_at),
        )
        self.metrics.deliveries.labels(item.kind, result).inc()
        if result == "sent":
            self.metrics.delivery_latency.labels(item.kind).observe(
                max(0.0, self.clock() - item.created_at)
            )
        await self._finish_sent(item, (item.ref, shown) if shown else None, note)

    def _wait_for_unsettled(self, item: OutboxItem) -> None:
        """An attempt whose call began and was never settled (the replica died or lost its
        claim mid-call, or its finish could not be written) may still be performed by
        Pachca: nothing is done before it could have landed, as after a lost answer, and a
        post is then looked for first (the item is `in_doubt`). Else a late edit would show
        an older state, a late post appear twice."""
        if item.begun_at is not None:
            landed_by = item.begun_at + self.create_settle
            if self.clock() < landed_by:
                raise _NotYet(landed_by, "a call begun and never settled may land")

    async def _begin(self, item: OutboxItem) -> None:
        """Written just before each call that changes what Pachca (or Alertmanager) shows (see
        `Store.begin_item`): whoever takes the item up next knows when the last one began.
        (A create records its own, `Delivery.create_sent_at`.)"""
        await self.store.begin_item(item.id, self.clock())

    def _calling(self, item: OutboxItem) -> AbstractContextManager[None]:
        """Pachca calls made inside record the attempt as begun as each goes out, after its
        wait for the pace: recorded before that wait, a call held back by a 429 pause could
        land after the taker's wait had ended."""
        return before_send(partial(self._begin, item))

    def _note(
        self,
        item: OutboxItem,
        result: str,
        started: float | None = None,
        error: str = "",
        incident_known: bool = False,
    ) -> Event | None:
        """The delivery as a timeline event: what belongs to an incident's message, and a
        direct message answering a press on a known incident."""
        dm = item.kind == Effect.DM.value and incident_known
        if item.kind not in TIMELINE_KINDS and not dm:
            return None
        details: dict[str, str | float] = {"op": item.kind, "result": result}
        if started is not None:
            details["took_ms"] = round((time.monotonic() - started) * 1000, 1)
            details["after_s"] = round(max(0.0, self.clock() - item.created_at), 3)
        if error:
            details["error"] = error[:300]
        return Event(self.clock(), "delivery", details)

    def _called(self, item: OutboxItem, stored: Stored | None) -> list[str]:
        """`oncall:x=<who>` for a create of a firing incident whose route names schedules."""
        if stored is None or item.kind != Effect.CREATE.value:
            return []
        route = self.rules.by_name(stored.incident.route).config
        at = datetime.fromtimestamp(self.clock(), UTC)
        schedules = self.render_options.schedules
        return [
            f"{e.details['mention']}={' '.join(e.details['who']) or '-'}"
            for e in called(route.mentions, schedules, at)
        ]

    async def _finish_sent(
        self, item: OutboxItem, shown: tuple[str, Delivery] | None, note: Event | None = None
    ) -> None:
        """Record a sent item as done. Pachca has it now: if this write failed, the item would
        be sent again (a second comment or DM), so a store hiccup gets a few quick tries."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                await self.store.finish_item(item.id, shown, note)
                return
            except StoreError:
                if attempt + 1 == FINISH_ATTEMPTS:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    async def _retry_later(self, item: OutboxItem, error: str, delay: float) -> None:
        log.warning(
            "outbox: %s of incident %s failed (%s); retry in %.1fs",
            item.kind,
            item.ref,
            error,
            delay,
        )
        self.metrics.deliveries.labels(item.kind, "retry").inc()
        note = self._note(item, "retry", error=error)
        await self.store.retry_item(item.id, self.clock() + delay, error, note)

    async def _ask_alertmanager(self, item: OutboxItem, stored: Stored) -> None:
        """Silence or Unsilence: a few tries (a person is waiting), then tell them why not."""
        try:
            if self.silencer is None:
                raise AlertmanagerError(
                    "ALERTMANAGER_URL is not set", retryable=False, why=Why.NOT_CONFIGURED
                )
            if item.kind == Effect.SILENCE:
                await self._begin(item)
                await self.silencer.silence(item, stored.incident)
            else:
                await self.silencer.unsilence(item, stored.incident)
        except AlertmanagerError as exc:
            if exc.retryable and item.attempts + 1 < SILENCE_ATTEMPTS:
                await self._retry_later(
                    item, str(exc), backoff(item.attempts, self.max_retry_delay)
                )
                return
            log.warning("outbox: %s of incident %s failed for good: %s", item.kind, item.ref, exc)
            self.metrics.deliveries.labels(item.kind, "failed").inc()
            if self.silencer is not None:
                await self.silencer.failed(item, exc.failure)
            await self.store.finish_item(item.id)
            return
        self.metrics.deliveries.labels(item.kind, "sent").inc()
        await self.store.finish_item(item.id)

    async def _send(self, item: OutboxItem, stored: Stored) -> tuple[str, Delivery | None]:
        """One operation on the incident's message; returns the result and what Pachca shows
        now, if that changed."""
        incident, delivery = stored.incident, stored.delivery
        kind = Effect(item.kind)
        if kind is Effect.CREATE:
            return await self._create(item, stored)
        if delivery.message_id is None:
            return await self._post_missing(item, stored)
        try:
            if kind is Effect.EDIT:
                if delivery.rendered_version >= incident.version:
                    return "coalesced", None
                return "sent", await self._edit_to_latest(item, stored)
            if kind is Effect.REPLY_REOPENED:
                return await self._reply(item, stored), None
            return await self._comment(item, delivery)
        except PachcaRequestError as exc:
            if not message_gone(exc):
                raise
        return await self._post_missing(item, await self._forget_message(incident))

    async def _forget_message(self, incident: Incident) -> Stored:
        """Pachca says the incident's message is gone: recorded as having none, so that it
        is posted again rather than every later edit and comment being lost."""
        log.warning(
            "outbox: the message of incident %s is gone from Pachca (deleted in the chat?); "
            "posting it again",
            incident.ref,
        )
        self.metrics.messages_recreated.inc()
        await self.store.record_delivery(incident.ref, NO_MESSAGE)
        return Stored(incident, NO_MESSAGE)

    async def _post_missing(self, item: OutboxItem, stored: Stored) -> tuple[str, Delivery | None]:
        """An edit or comment for an incident that has no message (its create was refused, or
        a re-post after a deletion failed half-way): the message is posted first, showing the
        incident as it is now, with the same care for an earlier create in doubt as a create
        gets; a comment then goes into its thread. The change is never dropped."""
        result, shown = await self._create(item, stored)
        posted = shown or stored.delivery
        if result == "coalesced" or posted.message_id is None:
            return result, shown
        if Effect(item.kind) is Effect.EDIT:  # the new message shows the incident as it is now
            return "recreated", posted
        _, thread = await self._comment(item, posted)
        return "recreated", thread or posted

    async def _create(self, item: OutboxItem, stored: Stored) -> tuple[str, Delivery | None]:
        incident, delivery = stored.incident, stored.delivery
        plan = plan_create(delivery, incident.version, self.clock(), self.create_settle)
        if plan.step is CreateStep.UP_TO_DATE:
            return "coalesced", None
        if plan.step is CreateStep.EDIT:  # adopted, and its edit did not get through
            return await self._adopt(item, stored)
        if plan.step is CreateStep.WAIT:
            raise _NotYet(plan.not_before)
        if plan.step is CreateStep.SEARCH:
            since = min(item.created_at, delivery.create_sent_at or item.created_at)
            keys = wanted_keys(incident.ref, delivery.create_digest)
            found = await self._find_earlier_post(incident.chat_id, incident.ref, keys, since)
            if found is not None:
                log.warning(
                    "outbox: incident %s was posted by an attempt whose answer was lost, as "
                    "message %d; adopting it",
                    incident.ref,
                    found,
                )
                # recorded first: the edit may land with its answer lost, and the post would
                # then match neither its button nor what the create said (version 0: what it
                # shows is not known, so the edit is owed until it is answered)
                adopted = Delivery(message_id=found)
                await self.store.record_delivery(incident.ref, adopted)
                return await self._adopt(item, Stored(incident, adopted))
        return "sent", await self._post(stored)

    async def _adopt(self, item: OutboxItem, stored: Stored) -> tuple[str, Delivery | None]:
        """Edit a post found in the chat to the incident as it is; if it has been deleted
        since it was found, the message is posted again."""
        try:
            return "reconciled", await self._edit_to_latest(item, stored)
        except PachcaRequestError as exc:
            if not message_gone(exc):
                raise
        return await self._create(item, await self._forget_message(stored.incident))

    async def _post(self, stored: Stored) -> Delivery:
        """Post the incident's message. The time is recorded first: if the answer is lost, the
        next attempt knows a create may be on its way (see attempts.py)."""
        incident, delivery = stored.incident, stored.delivery
        route = self.rules.by_name(incident.route).config

        async def post(message: Message) -> int:
            async def sending() -> None:  # as it goes out, after its wait for the pace
                sent = delivery.model_copy(
                    update={
                        "create_sent_at": self.clock(),
                        "create_digest": content_digest(message.content),
                    }
                )
                await self.store.record_delivery(incident.ref, sent)

            with before_send(sending):
                return await self.pachca.create_message(
                    "discussion",
                    incident.chat_id,
                    message.content,
                    message.buttons,
                    route.display_name,
                    route.display_avatar_url,
                )

        try:
            message_id = await self._render_fitting(stored, post)
        except PachcaError as exc:
            if not outcome_unknown(exc) and delivery.create_sent_at is None:
                # refused before anything was done, and no earlier create is in doubt
                await self.store.record_delivery(incident.ref, delivery)
            raise
        return Delivery(message_id=message_id, rendered_version=incident.version)

    async def _reply(self, item: OutboxItem, stored: Stored) -> str:
        """A reply in the chat to the incident's message, seen by those who do not follow
        its thread, under the route's display name. It carries the mentions: a retry looks
        for it in the chat first, as a lost answer may hide a reply that was posted."""
        route = self.rules.by_name(stored.incident.route).config
        chat_id, message_id = stored.incident.chat_id, stored.delivery.message_id
        assert message_id is not None
        if item.in_doubt:
            key = reply_key(message_id, item.content)
            if await self._find_earlier_post(chat_id, item.ref, [key], item.created_at) is not None:
                log.warning("outbox: %s of incident %s was posted already", item.kind, item.ref)
                return "reconciled"
        with self._calling(item):
            await self.pachca.create_message(
                "discussion",
                stored.incident.chat_id,
                item.content,
                display_name=route.display_name,
                display_avatar_url=route.display_avatar_url,
                parent_message_id=message_id,
            )
        return "sent"

    async def _comment(self, item: OutboxItem, delivery: Delivery) -> tuple[str, Delivery | None]:
        """A comment in the message's thread (made first if missing); returns the result and
        the delivery if a thread was made. A reminder or an escalation calls people: a retry
        looks for the comment in the thread first, as a lost answer may hide one posted."""
        assert delivery.message_id is not None
        shown = None
        thread_id = delivery.thread_id
        content = await self._with_actor(item)
        if thread_id is None or item.in_doubt:
            # Pachca returns the existing thread when asked again, and with it the thread's
            # own chat, where its comments are read
            thread = await self.pachca.create_thread(delivery.message_id)
            if thread.id != thread_id:
                shown = delivery.model_copy(update={"thread_id": thread.id})
            thread_id = thread.id
            if item.in_doubt and await self._posted_already(item, thread.chat_id, content):
                return "reconciled", shown
        with self._calling(item):
            await self.pachca.create_message("thread", thread_id, content)
        return "sent", shown

    async def _posted_already(self, item: OutboxItem, chat_id: int, content: str) -> bool:
        """Did an earlier attempt at this item post `content` to the chat, its answer lost?"""
        keys = [said_key(content)]
        if await self._find_earlier_post(chat_id, item.ref, keys, item.created_at) is None:
            return False
        log.warning("outbox: %s of incident %s was posted already", item.kind, item.ref)
        return True

    async def _find_earlier_post(
        self, chat_id: int, ref: str, keys: list[str], since: float
    ) -> int | None:
        """The id of a post of the incident's in the chat with one of `keys` (see
        attempts.post_keys), if any: the trace of a post whose answer was lost; looked for
        back to the time it was asked for. None when this bot may not read the chat or the
        post is too far back to reach: then it is posted unchecked (it may appear twice)
        rather than never."""
        try:
            return await self.lookback.find(chat_id, keys, since)
        except (PachcaError, LookbackCutShort) as exc:
            self._unchecked(exc, f"read chat {chat_id} back to an earlier post of incident {ref}")
            return None

    def _unchecked(self, exc: PachcaError | LookbackCutShort, what: str) -> None:
        """The search for an earlier attempt's post failed: a refusal to let this bot read
        (or a search cut short) means it is posted unchecked, and said so; anything else is
        raised, for the item to be retried."""
        if isinstance(exc, PachcaError) and not history_refused(exc):
            raise exc
        log.warning(
            "outbox: cannot %s (%s); posting without looking, so it may appear twice", what, exc
        )
        self.metrics.creates_unverified.inc()

    async def _send_post(self, item: OutboxItem, stored: Stored | None) -> str:
        """A message of its own to a chat; a link to the incident's message is put in."""
        post = json.loads(item.content)
        text = str(post["text"])
        if LINK_SLOT in text:
            message_id = stored.delivery.message_id if stored else None
            chat_id = stored.incident.chat_id if stored else None
            text = text.replace(LINK_SLOT, message_url(chat_id, message_id) if message_id else "")
        to, text = int(post["chat_id"]), text.strip()
        if item.in_doubt and await self._posted_already(item, to, text):
            return "reconciled"
        with self._calling(item):
            await self.pachca.create_message("discussion", to, text)
        return "sent"

    async def _send_dm(self, item: OutboxItem) -> str:
        if item.actor is None:
            log.error("outbox: direct message %d has nobody to go to; dropping", item.id)
            return "dropped"
        if item.in_doubt and await self._sent_directly_already(item, item.actor):
            return "reconciled"
        with self._calling(item):
            await self.pachca.create_message("user", item.actor, item.content)
        return "sent"

    async def _sent_directly_already(self, item: OutboxItem, user_id: int) -> bool:
        """Did an earlier attempt at this direct message land, its answer lost? Looked for in
        the bot's personal chat with the person, found among those active since it was asked
        for (no such chat: it did not land). As for any post: when that cannot be read, it is
        sent unchecked (it may appear twice) rather than never."""
        try:
            chat_id = await find_personal_chat(self.pachca, user_id, item.created_at)
        except (PachcaError, LookbackCutShort) as exc:
            self._unchecked(exc, f"find the personal chat with user {user_id}")
            return False
        return chat_id is not None and await self._posted_already(item, chat_id, item.content)

    async def _with_actor(self, item: OutboxItem) -> str:
        """The comment with the presser's display name put in (escaped)."""
        if item.actor is None or ACTOR_SLOT not in item.content:
            return item.content
        names = await self.users.names({item.actor})
        return item.content.replace(ACTOR_SLOT, person(item.actor, names))

    async def _edit_to_latest(self, item: OutboxItem, stored: Stored) -> Delivery:
        """Edit the message to the incident as it is; returns what Pachca now shows."""
        delivery = stored.delivery
        message_id = delivery.message_id
        assert message_id is not None

        async def edit(message: Message) -> int:
            with self._calling(item):
                await self.pachca.update_message(message_id, message.content, message.buttons)
            return message_id

        await self._render_fitting(stored, edit)
        return delivery.model_copy(update={"rendered_version": stored.incident.version})

    async def _render_fitting(
        self, stored: Stored, send: Callable[[Message], Awaitable[int]]
    ) -> int:
        """Send the full rendering; if it cannot be made, or Pachca says the content is too
        long, once more in the minimal form; RenderError if even that cannot be made."""
        incident = stored.incident
        route = self.rules.by_name(incident.route).config
        people = {uid for uid in (incident.acked_by, incident.resolved_by) if uid is not None}
        names = await self.users.names(people)
        now = datetime.fromtimestamp(self.clock(), UTC)  # whoever is on duty as it is sent

        def minimal() -> Message:
            try:
                return render_message(
                    incident,
                    route,
                    self.render_options,
                    max_alerts=1,
                    text_limit=100,
                    names=names,
                    now=now,
                )
            except Exception as exc:
                raise RenderError(f"{type(exc).__name__}: {exc}") from exc

        try:
            message = render_message(incident, route, self.render_options, names=names, now=now)
        except Exception:
            log.exception("outbox: incident %s cannot be rendered in full", incident.ref)
            return await send(minimal())
        try:
            return await send(message)
        except PachcaRequestError as exc:
            if not exc.content_too_long:
                raise
            log.warning(
                "outbox: Pachca found incident %s too long; sending a shorter message",
                stored.incident.ref,
            )
            return await send(minimal())
