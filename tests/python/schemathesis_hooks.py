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
- Schemathesis generates header values from letters and digits only, so it
  cannot write an entity tag (which needs `"`); its coverage phase then
  seeds the optional If-Match with an invalid value and counts the case as
  valid. Such cases are dropped: a case sent as valid must be valid.
"""

import hashlib
import json
import os
import re

import schemathesis

PINS = json.loads(os.environ.get("LIS_ST_PINS", "{}"))
IF_MATCH = re.compile(r'^\s*(\*|"0*[1-9][0-9]{0,17}"|W/.*)\s*$')
IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")


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
    headers = case.headers
    if headers and isinstance(headers.get("Idempotency-Key"), str):
        key = headers["Idempotency-Key"]
        if IDEMPOTENCY_KEY.match(key):
            digest = hashlib.sha256(
                json.dumps([case.method, path, body], sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
            headers["Idempotency-Key"] = f"{key[:200]}-{digest}"
    return None
