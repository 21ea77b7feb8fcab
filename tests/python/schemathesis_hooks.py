"""Schemathesis hooks for tests/tests/schemathesis.rs.

They give schemathesis what a real partner has and a schema cannot say,
where its configuration file cannot (schemathesis 4.32.5):

- The examples and coverage phases do not apply configured body values, so
  a valid body names records that do not exist. In a case whose body is
  meant to be valid, the ids and cursors come from LIS_ST_PINS (JSON), as
  the configuration gives them to the other phases.
- An Idempotency-Key is scoped to one request body; schemathesis sends the
  same short keys with different bodies, which the server rightly refuses
  (422 `reused`). The key sent is the generated one plus a digest of the
  method, path and body, so that it stays valid and is never reused.
- Some values are valid only against today or another record: a date of
  birth from 1900 to today, a collection time not before the patient's
  birth nor in the future. In a case whose body is meant to be valid they
  are set to a valid one (the stack's own tests cover those rules).
- Consistency tokens are opaque (only issued ones are valid) and `asOf`
  must not be in the future: cases meant to be valid carry an issued token
  and a past instant. A record created in the run is read the way a
  partner reads its own write: with the token its create answered, and as
  it is now (no `asOf`), since reads without the token are only eventually
  consistent.
- Schemathesis generates header values from letters and digits only, so it
  cannot write an entity tag (which needs `"`); its coverage phase then
  seeds the optional If-Match with an invalid value and counts the case as
  valid. Such cases are dropped: a case sent as valid must be valid.
"""

import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone

import schemathesis

PINS = json.loads(os.environ.get("LIS_ST_PINS", "{}"))
# The headers' patterns, as the OpenAPI document states them.
IF_MATCH = re.compile(PINS["patterns"]["If-Match"])
IDEMPOTENCY_KEY = re.compile(PINS["patterns"]["Idempotency-Key"])


def _positive(case, location):
    meta = case.meta
    if meta is None:
        return False
    for place, info in meta.components.items():
        if getattr(place, "value", place) == location:
            return info.mode.is_positive
    return meta.generation.mode.is_positive


@schemathesis.hook
def filter_case(ctx, case):
    headers = case.headers or {}
    value = headers.get("If-Match")
    if value is not None and _positive(case, "header") and not IF_MATCH.match(str(value)):
        return False
    return True


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    path = case.operation.path
    body = case.body
    if isinstance(body, dict) and _positive(case, "body"):
        for field, value in PINS.get("body", {}).get(path, {}).items():
            if isinstance(body.get(field), str):
                body[field] = value
        _valid_dates(body)
    headers = case.headers
    created = [
        CREATED[key]
        for key in (str(v) for v in (case.path_parameters or {}).values())
        if key in CREATED
    ]
    if headers and "Consistency-Token" in headers and _positive(case, "header"):
        headers["Consistency-Token"] = created[0] if created else PINS["consistencyToken"]
    if case.query and "asOf" in case.query and _positive(case, "query"):
        if created:
            del case.query["asOf"]
        else:
            case.query["asOf"] = PINS["asOf"]
    if headers and isinstance(headers.get("Idempotency-Key"), str):
        key = headers["Idempotency-Key"]
        if IDEMPOTENCY_KEY.match(key):
            digest = hashlib.sha256(
                json.dumps([case.method, path, body], default=str).encode()
            ).hexdigest()[:16]
            headers["Idempotency-Key"] = f"{key[:200]}-{digest}"
    return None


# The Consistency-Token of each record created in the run, by its id.
CREATED = {}


@schemathesis.hook
def after_call(ctx, case, response):
    name = {"/v1/patients": "patientID", "/v1/orders": "orderID"}.get(case.operation.path)
    if name is None or case.method.upper() != "POST" or response.status_code != 201:
        return
    token = next(
        (value for key, value in response.headers.items() if key.lower() == "consistency-token"),
        None,
    )
    if isinstance(token, list):
        token = token[0] if token else None
    created = response.json()
    if token and name in created:
        CREATED[str(created[name])] = token


def _valid_dates(body):
    if isinstance(body.get("dateOfBirth"), str):
        body["dateOfBirth"] = "1990-12-10"
    collected = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for holder in (body, body.get("specimen")):
        if isinstance(holder, dict) and isinstance(holder.get("collectedAt"), str):
            holder["collectedAt"] = collected
