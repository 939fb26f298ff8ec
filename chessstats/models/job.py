"""The wire shape of a background job run (API.md ``JobRun``)."""

from __future__ import annotations

from chessstats.models.common import Model


class JobRun(Model, kw_only=True):
    """``{id, job, state, trigger, attempt, queuedAt, startedAt, finishedAt, durationMs, summary, error}``.

    ``state``: waiting | active | completed | failed; ``trigger``: schedule | manual | retry |
    catch-up; times ISO 8601 UTC (seconds), null until they happen; ``durationMs`` milliseconds.
    """

    id: int
    job: str
    state: str
    trigger: str
    attempt: int
    queued_at: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    summary: str | None
    error: str | None
