"""Jobs (``/api/v1/jobs``): submit a spec, follow it, cancel it.

The spec is the body, as JSON or YAML (``Content-Type: application/yaml``). Submit
and cancel need a deployer or admin key that may see the job's model, and are
audited. ``/events`` is Server-Sent Events: the stored events after ``after`` (or
``Last-Event-ID``), then live ones until the job ends, so a client that reconnects
misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from maas.api.access import audited, require, visible
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.api.routers.datasets import require_dataset
from maas.auth.principal import Action
from maas.errors import InvalidRequest, InvalidSpec, JobNotFound, MaasError
from maas.protocols.bounds import MAX_SEQ, parse_digits
from maas.protocols.jobs import JobEvent, JobInfo, JobState, job_spec_adapter
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

_SPEC_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
        "description": "A job spec: kind train, finetune, optimize or evaluate.",
    }
}
_SPECS = job_spec_adapter()
_KEEPALIVE_S = 10.0


def _parse_spec(body: bytes, content_type: str) -> Any:
    if not body.strip():
        raise InvalidSpec("the request body must be a job spec (JSON or YAML)")
    try:
        if "yaml" in content_type:
            import yaml

            data = yaml.safe_load(body)
        else:
            data = orjson.loads(body)
    except Exception as exc:
        language = "YAML" if "yaml" in content_type else "JSON"
        raise InvalidSpec(f"the spec is not valid {language}: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidSpec("the spec must be a mapping with a kind")
    try:
        return _SPECS.validate_python(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in error["loc"]), "problem": error["msg"]}
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = problems[0]
        raise InvalidSpec(
            f"invalid spec: {first['field'] or 'spec'}: {first['problem']}",
            details={"problems": problems[:20]},
        ) from None


@router.post(
    "", summary="Submit a job", status_code=201, response_model=JobInfo, openapi_extra=_SPEC_DOC
)
async def submit_job(request: Request, services: Services = Depends(get_services)) -> Response:
    spec = _parse_spec(await request.body(), request.headers.get("content-type", ""))
    action = "job.submit"
    async with audited(
        request, services.audit, action, spec.model, need=Action.WRITE, model=spec.model
    ) as note:
        note.details["kind"] = spec.kind
        require_dataset(request, spec.dataset)
        job = await services.jobs.submit(spec, note.principal.name)
        note.details["job"] = job.id
    return json_response(job, status_code=201)


@router.get("", summary="List jobs, newest first", response_model=list[JobInfo])
async def list_jobs(
    request: Request,
    state: JobState | None = Query(None),
    model: str | None = Query(None),
    limit: int = Query(100, ge=1, le=1000),
    services: Services = Depends(get_services),
) -> Response:
    require(request, Action.READ)
    jobs = await asyncio.to_thread(
        services.jobs.store.list_jobs, state=state, model=model, limit=limit
    )
    return json_response(visible(request, jobs, lambda job: job.model))


async def _visible_job(request: Request, services: Services, job_id: str) -> JobInfo:
    job = await services.jobs.get(job_id)
    try:
        require(request, Action.READ, model=job.model)
    except MaasError:
        raise JobNotFound(f"job {job_id!r} not found") from None
    return job


@router.get("/{job_id}", summary="Show a job", response_model=JobInfo)
async def get_job(
    job_id: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    return json_response(await _visible_job(request, services, job_id))


@router.post("/{job_id}/cancel", summary="Cancel a job (stops its process)", response_model=JobInfo)
async def cancel_job(
    job_id: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    job = await _visible_job(request, services, job_id)
    async with audited(
        request, services.audit, "job.cancel", job.id, need=Action.WRITE, model=job.model
    ):
        cancelled = await services.jobs.cancel(job.id)
    return json_response(cancelled)


@router.get(
    "/{job_id}/logs",
    summary="A job's stored events (logs, progress, states)",
    response_model=list[JobEvent],
)
async def job_logs(
    job_id: str,
    request: Request,
    after: int = Query(0, ge=0, le=MAX_SEQ, description="Only events after this sequence number."),
    type: str | None = Query(None, pattern="^(log|progress|state)$"),
    services: Services = Depends(get_services),
) -> Response:
    job = await _visible_job(request, services, job_id)
    types = (type,) if type else None
    return json_response(await services.jobs.events(job.id, after, types))


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


@router.get("/{job_id}/events", summary="Follow a job: Server-Sent Events until it ends")
async def job_events(
    job_id: str,
    request: Request,
    after: int = Query(0, ge=0, le=MAX_SEQ, description="Resume after this sequence number."),
    services: Services = Depends(get_services),
) -> StreamingResponse:
    job = await _visible_job(request, services, job_id)
    start = _resume_after(request.headers.get("last-event-id"), after)
    return StreamingResponse(
        _stream(services, request, job.id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_after(last_event_id: str | None, after: int) -> int:
    """Where a follower resumes: ``Last-Event-ID`` (what its browser saw last) wins."""
    if last_event_id is None or not last_event_id.strip():
        return after
    seq = parse_digits(last_event_id.strip(), MAX_SEQ)
    if seq is None:
        raise InvalidRequest(
            f"Last-Event-ID must be an event sequence number (0 to {MAX_SEQ})",
            details={"param": "Last-Event-ID"},
        )
    return seq


async def _stream(
    services: Services, request: Request, job_id: str, seq: int
) -> AsyncIterator[bytes]:
    jobs = services.jobs
    idle = 0.0
    while True:
        events = await jobs.events(job_id, seq)
        for event in events:
            seq = event.seq
            yield _sse(event.type, event.model_dump(mode="json"), event.seq)
        job = await jobs.get(job_id)
        if job.finished and not events:
            yield _sse("end", job.model_dump(mode="json"))
            return
        if events:
            idle = 0.0
            continue
        if await request.is_disconnected() or services.models.is_shutting_down:
            return  # a draining server must not wait on followers
        await jobs.wait_changed(job_id, 1.0)
        idle += 1.0
        if idle >= _KEEPALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"
