"""OpenAI's audio API: ``/v1/audio/transcriptions``, ``/v1/audio/translations`` and
``/v1/audio/speech``, behaving as the official SDK expects.

Transcriptions and translations take ``multipart/form-data`` (``file`` and the fields of
``TranscriptionRequest``); the upload is capped at ``audio.max_upload_bytes`` before
it is read (413) and decoded only once the call is admitted. Speech takes JSON and
answers the audio bytes. Everything between decoding the request and encoding the
answer is ``InferenceService``'s: the access check, limits, metering (seconds of
audio, characters), metrics. Errors are OpenAI-shaped, as on every ``/v1`` route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from maas.api.access import caller
from maas.api.bodies import body_example, model_not_found, parse_json, validated
from maas.api.deps import get_services
from maas.api.forms import multipart_form
from maas.api.lifetime import requested_timeout
from maas.api.responses import json_response
from maas.errors import InvalidRequest, PayloadTooLarge
from maas.protocols.audio import SpeechRequest, TranscriptionRequest, render_transcript
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/v1/audio", tags=["openai"])

_Services = Annotated[Services, Depends(get_services)]
#: Room for the form's other fields and part headers beside the file itself.
_FORM_OVERHEAD = 64 * 1024
#: Fields a transcription form may carry (OpenAI's, a few more for what clients add).
_MAX_FIELDS = 32
_FORM_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "example": "whisper"},
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "response_format": {
                            "type": "string",
                            "enum": ["json", "text", "srt", "vtt", "verbose_json"],
                        },
                        "temperature": {"type": "number"},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                        },
                    },
                }
            }
        },
    }
}


async def _read_form(request: Request, limit: int) -> tuple[dict[str, Any], bytes]:
    """The form's fields and the file's bytes; 413 past ``limit`` before any is read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + _FORM_OVERHEAD:
        raise PayloadTooLarge(f"the audio file exceeds the limit of {limit} bytes")
    async with multipart_form(
        request,
        expected="the audio, with the file in the field 'file',",
        extra=("audio", "audio"),
        max_files=1,
        max_fields=_MAX_FIELDS,
    ) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file: the form has no file", details={"param": "file"})
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"the audio file exceeds the limit of {limit} bytes")
        data = await upload.read()
        fields: dict[str, Any] = {
            key: value for key, value in form.multi_items() if isinstance(value, str)
        }
        fields["timestamp_granularities"] = [
            value
            for key in ("timestamp_granularities[]", "timestamp_granularities")
            for value in form.getlist(key)
        ]
    if len(data) > limit:
        raise PayloadTooLarge(f"the audio file exceeds the limit of {limit} bytes")
    return fields, data


async def _transcribe(
    request: Request, services: Services, task: Literal["transcribe", "translate"]
) -> Response:
    fields, data = await _read_form(request, services.settings.audio.max_upload_bytes)
    body = validated(TranscriptionRequest, fields)
    with model_not_found():
        served = await services.inference.transcribe(
            caller(request),
            body.model,
            data,
            body.options(task),
            endpoint="openai.transcriptions" if task == "transcribe" else "openai.translations",
            timeout_s=requested_timeout({}, request.headers),
        )
    done = served.result
    content, media_type = render_transcript(done.transcript, body.response_format, task)
    headers = {"X-Model-Version": str(done.version.version), **served.headers}
    if isinstance(content, dict):
        return json_response(content, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.post("/transcriptions", summary="Speech to text (OpenAI)", openapi_extra=_FORM_DOC)
async def transcriptions(request: Request, services: _Services) -> Response:
    return await _transcribe(request, services, "transcribe")


@router.post("/translations", summary="Speech to English text (OpenAI)", openapi_extra=_FORM_DOC)
async def translations(request: Request, services: _Services) -> Response:
    return await _transcribe(request, services, "translate")


@router.post(
    "/speech",
    summary="Text to speech (OpenAI); wav, mp3, opus, aac, flac or pcm",
    openapi_extra=body_example({"model": "espeak", "input": "Hello world", "voice": "alloy"}),
)
async def speech(request: Request, services: _Services) -> Response:
    body = await parse_json(request, SpeechRequest)
    with model_not_found():
        served = await services.inference.speak(
            caller(request), body, timeout_s=requested_timeout({}, request.headers)
        )
    done = served.result
    headers = {"X-Model-Version": str(done.version.version), **served.headers}
    return Response(done.audio, media_type=done.media_type, headers=headers)
