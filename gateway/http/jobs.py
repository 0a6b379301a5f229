"""Jobs over HTTP: the conveniences on top of the annotated JobService and Operations routes.

- `POST /v1/jobs` answers 202 with the job's operation and a `Location` to poll;
- its `request` may omit `@type`: the method's input type is filled in;
- `GET /v1/jobs/{job_id}/events` resumes after the `Last-Event-ID` header (see annotated_routes.RESUMABLE);
- get, list (`?filter=labels.characterId="char_001"` passes through), cancel and delete are the
  google.longrunning.Operations annotations: `/v1/operations...`.

`annotated_routes` lists the two conveniences in its hook tables.
"""

from __future__ import annotations

from google.protobuf.message import Message
from starlette.responses import Response

from capmesh.gateway.server.http.bindings import method_descriptor

SUBMIT_JOB = "capmesh.gateway.v1.JobService.SubmitJob"
TYPE_URL_PREFIX = "type.googleapis.com/"


def infer_request_type(payload: object) -> object:
    if not isinstance(payload, dict):
        return payload
    inner = payload.get("request")
    method = payload.get("method")
    if isinstance(inner, dict) and "@type" not in inner and isinstance(method, str):
        try:
            input_type = method_descriptor(method).input_type.full_name
        except KeyError:
            return payload  # the job service answers NOT_FOUND / INVALID_ARGUMENT for it
        return {**payload, "request": {"@type": TYPE_URL_PREFIX + input_type, **inner}}
    return payload


def locate_operation(reply: Message, response: Response) -> None:
    name = reply.operation.name
    if name:
        response.headers["Location"] = f"/v1/{name}"
