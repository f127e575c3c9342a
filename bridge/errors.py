"""Every exception the bridge raises on purpose.

BridgeError
├── ConfigError            settings or rules are wrong; the message says where and what to change
├── PayloadError           a webhook body is not what the source sends (answered with 4xx)
├── RenderError            an incident cannot be rendered even in the minimal form
├── StoreError             the store could not record or read state (intake answers 503)
│   ├── ConflictError      another writer changed the incident first; retry the transition
│   └── ClaimLost          another replica took over an outbox item: drop this delivery's result
└── PachcaError            a Pachca API call failed; `retryable` says whether to try again
    ├── PachcaUnavailable  connection refused, timeout, reset: retry with backoff
    ├── PachcaServerError  5xx: retry with backoff
    ├── PachcaRateLimited  429: retry after `retry_after` seconds
    └── PachcaRequestError 4xx other than 429: the request is wrong, never retried
        └── PachcaAuthError    401, or 403 for the token itself: every call would fail alike,
                               so delivery pauses (items kept) until a call succeeds
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of all errors the bridge raises on purpose."""


class ConfigError(BridgeError):
    """Settings or rules are invalid. `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PayloadError(BridgeError):
    """A webhook body that cannot be accepted; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, details: list[str] | None = None) -> None:
        self.status = status
        self.message = message
        self.details = details
        super().__init__(message)


class RenderError(BridgeError):
    """Rendering failed even in the minimal form: the item is dead-lettered, never retried."""


class StoreError(BridgeError):
    """The store failed; callers answer 503 so the sender retries."""


class ConflictError(StoreError):
    """An optimistic write lost a race; re-read and apply the transition again."""


class ClaimLost(StoreError):
    """Another replica holds the incident's outbox claim now (this one's lapsed): what this
    replica did is not recorded, so two replicas never both write an incident's delivery."""


class DuplicateEvent(StoreError):
    """The event id was recorded before: a redelivery or replay, to be answered 2xx and ignored."""


class PachcaError(BridgeError):
    """A Pachca call failed. `endpoint` is the route template, e.g. `PUT /messages/{id}`."""

    retryable = False

    def __init__(self, endpoint: str, message: str, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(f"{endpoint}: {message}")


class PachcaUnavailable(PachcaError):
    retryable = True


class PachcaServerError(PachcaError):
    retryable = True


class PachcaRateLimited(PachcaError):
    retryable = True

    def __init__(self, endpoint: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, f"rate limited (Retry-After: {retry_after})", status=429)


class PachcaRequestError(PachcaError):
    """Pachca refused the request itself (400/401/403/404/422). `errors` is Pachca's body as
    readable lines; `codes` its (key, code) pairs, e.g. ("entity_id", "not_found")."""

    def __init__(
        self,
        endpoint: str,
        status: int,
        errors: list[str],
        codes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.errors = errors
        self.codes = codes
        super().__init__(endpoint, f"HTTP {status}: {'; '.join(errors) or 'no details'}", status)

    @property
    def content_too_long(self) -> bool:
        """True when Pachca named the content as the cause, so a smaller rendering may pass."""
        return any("content" in e and ("too_long" in e or "long" in e) for e in self.errors)


class PachcaAuthError(PachcaRequestError):
    """The token itself is refused (revoked, rotated, missing a scope): not this request's
    fault, so the outbox keeps its items and pauses instead of dead-lettering them."""
