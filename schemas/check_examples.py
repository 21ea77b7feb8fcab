#!/usr/bin/env python3
"""Checks the event schemas under schemas/.

For every schema file `schemas/<streamType>/<EventType>.v<N>.json`:

- the file is a valid JSON Schema draft 2020-12 document
  (`Draft202012Validator.check_schema`);
- it is self-contained (only local `#...` references), its `$id` matches its
  path, and its `type`, `schemaVersion` and `streamType` constants match its
  name;
- every hand-written valid example below validates (with format checking);
- every invalid example is refused: the hand-written ones below, plus, built
  from each valid example, an extra envelope property, an extra data property
  and each required envelope or data field left out.

Needs `pip install jsonschema` (and `rfc3339-validator` so that the
`date-time` format is checked too). Run from anywhere:

    python3 schemas/check_examples.py

Exits non-zero on the first kind of failure it reports.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

HERE = Path(__file__).resolve().parent
ID_BASE = "https://lis.example/schemas/"
FILE_NAME = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\.v(?P<version>[1-9][0-9]*)\.json$")
STREAM_TYPES = {"patient", "account", "partner", "client", "location"}

# Realistic ids, reused so that the examples hang together.
PATIENT_ID = "0b7f3c1e-5d2a-4f8e-9a61-3c4d5e6f7a81"
ACCOUNT_ID = "6f1d2c3b-4a59-4e7d-8c6b-5a4f3e2d1c0b"
PARTNER_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CLIENT_STREAM_ID = "3e5d7c9b-1a2f-5b4c-8d6e-7f8a9b0c1d2e"  # v5, derived from clientID
LOCATION_STREAM_ID = "7c2e4a6b-8d0f-5e1a-9b3c-4d5e6f7a8b9c"  # v5, derived from locationID


def envelope(
    event_type: str,
    stream_type: str,
    stream_id: str,
    version: int,
    data: dict,
    *,
    event_id: str,
    command_id: str,
    actor: dict,
    occurred_at: str = "2026-11-26T08:31:12.418203Z",
    idempotency_key: str | None = None,
) -> dict:
    event = {
        "eventID": event_id,
        "type": event_type,
        "schemaVersion": 1,
        "streamType": stream_type,
        "streamID": stream_id,
        "version": version,
        "occurredAt": occurred_at,
        "actor": actor,
        "commandID": command_id,
    }
    if idempotency_key is not None:
        event["idempotencyKey"] = idempotency_key
    event["data"] = data
    return event


PARTNER = {"type": "partner", "id": PARTNER_ID}
OPERATOR = {"type": "operator", "id": "jdoe"}
SYSTEM = {"type": "system", "id": "account-reactor"}

# --- valid examples ---------------------------------------------------------

PATIENT_REGISTERED_FULL = envelope(
    "PatientRegistered", "patient", PATIENT_ID, 1,
    {
        "patientID": PATIENT_ID,
        "clientID": "C1",
        "locationID": "L1",
        "externalPatientID": "MRN-1001",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "dateOfBirth": "1990-12-10",
        "sex": "female",
        "email": "ada@example.org",
        "phone": "+1 (555) 555-0100",
        "address": {
            "line1": "12 St James's Square",
            "city": "London",
            "postalCode": "SW1Y 4JH",
            "country": "GB",
        },
    },
    event_id="1c0f4e2a-7b3d-4c5e-9f60-718293a4b5c6",
    command_id="2d1e5f3b-8c4e-4d6f-a071-8293a4b5c6d7",
    actor=PARTNER,
    idempotency_key="reg-MRN-1001-2026-11-26",
)

PATIENT_REGISTERED_MINIMAL = envelope(
    "PatientRegistered", "patient", "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", 1,
    {
        "patientID": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
        "clientID": "clinic.north_01",
        "locationID": "north-01.draw-site",
        "firstName": "José",
        "lastName": "Núñez García",
        "dateOfBirth": "1900-01-01",
        "sex": "unknown",
    },
    event_id="3e2f6a4c-9d5f-4e70-b182-93a4b5c6d7e8",
    command_id="4f3a7b5d-0e6a-4f81-8293-a4b5c6d7e8f9",
    actor=PARTNER,
    occurred_at="2026-11-26T08:31:12Z",
)

PATIENT_UPDATED = envelope(
    "PatientUpdated", "patient", PATIENT_ID, 2,
    {
        "patientID": PATIENT_ID,
        "changes": {
            "lastName": "King",
            "locationID": "L2",
            "email": "ada.king@example.org",
            "phone": None,
            "address": {"line1": "1 Ockham Park", "city": "Ockham", "country": "GB"},
        },
    },
    event_id="5a4b8c6e-1f7b-4a92-9304-b5c6d7e8f901",
    command_id="6b5c9d7f-2a8c-4ba3-a415-c6d7e8f90a12",
    actor=PARTNER,
    occurred_at="2026-11-27T14:02:55.001Z",
    idempotency_key="0f9e8d7c-patch-1",
)

PATIENT_UPDATED_REMOVALS = envelope(
    "PatientUpdated", "patient", PATIENT_ID, 3,
    {
        "patientID": PATIENT_ID,
        "changes": {"externalPatientID": None, "email": None, "address": None},
    },
    event_id="7c6d0e8a-3b9d-4cb4-8526-d7e8f90a1b23",
    command_id="8d7e1f9b-4c0e-4dc5-9637-e8f90a1b2c34",
    actor=OPERATOR,
    occurred_at="2026-11-28T09:00:00+00:00",
)

PATIENT_UPDATED_ONE_FIELD = envelope(
    "PatientUpdated", "patient", PATIENT_ID, 4,
    {"patientID": PATIENT_ID, "changes": {"dateOfBirth": "1915-12-10"}},
    event_id="9e8f2a0c-5d1f-4ed6-a748-f90a1b2c3d45",
    command_id="af9a3b1d-6e2a-4fe7-b859-0a1b2c3d4e56",
    actor=PARTNER,
)

PATIENT_ACCOUNT_INVITED = envelope(
    "PatientAccountInvited", "account", ACCOUNT_ID, 1,
    {"accountID": ACCOUNT_ID, "patientID": PATIENT_ID, "email": "ada@example.org"},
    event_id="b0ab4c2e-7f3b-4a08-8c6a-1b2c3d4e5f67",
    command_id="2d1e5f3b-8c4e-4d6f-a071-8293a4b5c6d7",
    actor=PARTNER,
    idempotency_key="reg-MRN-1001-2026-11-26",
)

PARTNER_REGISTERED = envelope(
    "PartnerRegistered", "partner", PARTNER_ID, 1,
    {
        "partnerID": PARTNER_ID,
        "name": "Northside EHR",
        "client_id": "lis_9a8b7c6d5e4f",
        "permissions": ["patients:create", "patients:read", "patients:update", "tests:create", "tests:read"],
        "scope": {"clients": ["C1", "C2"], "locations": "*"},
    },
    event_id="c1bc5d3f-8a4c-4b19-9d7b-2c3d4e5f6a78",
    command_id="d2cd6e4a-9b5d-4c2a-ae8c-3d4e5f6a7b89",
    actor=OPERATOR,
)

PARTNER_ACCESS_CHANGED = envelope(
    "PartnerAccessChanged", "partner", PARTNER_ID, 2,
    {
        "partnerID": PARTNER_ID,
        "permissions": ["patients:read", "tests:read", "results:write", "audit:read"],
        "scope": {"clients": "*", "locations": ["L1", "L2.annex"]},
    },
    event_id="e3de7f5b-0c6e-4d3b-bf9d-4e5f6a7b8c90",
    command_id="f4ef806c-1d7f-4e4c-80ae-5f6a7b8c9d01",
    actor=OPERATOR,
)

PARTNER_ACCESS_CHANGED_EMPTY = envelope(
    "PartnerAccessChanged", "partner", PARTNER_ID, 3,
    {"partnerID": PARTNER_ID, "permissions": [], "scope": {"clients": [], "locations": []}},
    event_id="05f0917d-2e80-4f5d-91bf-6a7b8c9d0e12",
    command_id="16a1a28e-3f91-406e-a2c0-7b8c9d0e1f23",
    actor=OPERATOR,
)

PARTNER_SECRET_ROTATED = envelope(
    "PartnerSecretRotated", "partner", PARTNER_ID, 4,
    {"partnerID": PARTNER_ID},
    event_id="27b2b39f-40a2-417f-b3d1-8c9d0e1f2a34",
    command_id="38c3c4a0-51b3-4280-84e2-9d0e1f2a3b45",
    actor=OPERATOR,
)

PARTNER_DISABLED = envelope(
    "PartnerDisabled", "partner", PARTNER_ID, 5,
    {"partnerID": PARTNER_ID},
    event_id="49d4d5b1-62c4-4391-95f3-0e1f2a3b4c56",
    command_id="5ae5e6c2-73d5-44a2-a604-1f2a3b4c5d67",
    actor=OPERATOR,
)

CLIENT_REGISTERED = envelope(
    "ClientRegistered", "client", CLIENT_STREAM_ID, 1,
    {"clientID": "C1", "name": "Northside Family Practice"},
    event_id="6bf6f7d3-84e6-45b3-b715-2a3b4c5d6e78",
    command_id="7c07a8e4-95f7-46c4-8826-3b4c5d6e7f89",
    actor=SYSTEM | {"id": "lis-up"},
)

LOCATION_REGISTERED = envelope(
    "LocationRegistered", "location", LOCATION_STREAM_ID, 1,
    {"locationID": "L1", "clientID": "C1", "name": "Northside Main Street draw site"},
    event_id="8d18b9f5-a608-47d5-9937-4c5d6e7f8a90",
    command_id="9e29ca06-b719-48e6-aa48-5d6e7f8a9b01",
    actor=OPERATOR,
)

VALID: dict[str, list[dict]] = {
    "patient/PatientRegistered.v1.json": [PATIENT_REGISTERED_FULL, PATIENT_REGISTERED_MINIMAL],
    "patient/PatientUpdated.v1.json": [PATIENT_UPDATED, PATIENT_UPDATED_REMOVALS, PATIENT_UPDATED_ONE_FIELD],
    "account/PatientAccountInvited.v1.json": [PATIENT_ACCOUNT_INVITED],
    "partner/PartnerRegistered.v1.json": [PARTNER_REGISTERED],
    "partner/PartnerAccessChanged.v1.json": [PARTNER_ACCESS_CHANGED, PARTNER_ACCESS_CHANGED_EMPTY],
    "partner/PartnerSecretRotated.v1.json": [PARTNER_SECRET_ROTATED],
    "partner/PartnerDisabled.v1.json": [PARTNER_DISABLED],
    "client/ClientRegistered.v1.json": [CLIENT_REGISTERED],
    "location/LocationRegistered.v1.json": [LOCATION_REGISTERED],
}

# --- hand-written invalid examples ------------------------------------------


def changed(event: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A copy of `event` with the dotted `path` set to `value` (or deleted)."""
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return out


INVALID: dict[str, list[tuple[str, dict]]] = {
    "patient/PatientRegistered.v1.json": [
        ("extra envelope property", changed(PATIENT_REGISTERED_FULL, "partition", 3)),
        ("missing actor", changed(PATIENT_REGISTERED_FULL, "actor", delete=True)),
        ("missing data.dateOfBirth", changed(PATIENT_REGISTERED_FULL, "data.dateOfBirth", delete=True)),
        ("data.middleName is not a field", changed(PATIENT_REGISTERED_FULL, "data.middleName", "Augusta")),
        ("extra address property", changed(PATIENT_REGISTERED_FULL, "data.address.county", "Westminster")),
        ("empty address", changed(PATIENT_REGISTERED_FULL, "data.address", {})),
        ("lowercase country", changed(PATIENT_REGISTERED_FULL, "data.address.country", "gb")),
        ("sex outside the enum", changed(PATIENT_REGISTERED_FULL, "data.sex", "F")),
        ("date of birth not YYYY-MM-DD", changed(PATIENT_REGISTERED_FULL, "data.dateOfBirth", "10/12/1990")),
        ("date of birth before 1900", changed(PATIENT_REGISTERED_FULL, "data.dateOfBirth", "1899-12-31")),
        ("impossible date", changed(PATIENT_REGISTERED_FULL, "data.dateOfBirth", "1990-02-30")),
        ("null email (omitted, never null)", changed(PATIENT_REGISTERED_FULL, "data.email", None)),
        ("null externalPatientID", changed(PATIENT_REGISTERED_FULL, "data.externalPatientID", None)),
        ("externalPatientID with a space", changed(PATIENT_REGISTERED_FULL, "data.externalPatientID", "MRN 1001")),
        ("externalPatientID too long", changed(PATIENT_REGISTERED_FULL, "data.externalPatientID", "M" * 65)),
        ("clientID with a slash", changed(PATIENT_REGISTERED_FULL, "data.clientID", "C/1")),
        ("blank first name", changed(PATIENT_REGISTERED_FULL, "data.firstName", "   ")),
        ("control character in name", changed(PATIENT_REGISTERED_FULL, "data.lastName", "Love\tlace")),
        ("first name too long", changed(PATIENT_REGISTERED_FULL, "data.firstName", "A" * 101)),
        ("phone with letters", changed(PATIENT_REGISTERED_FULL, "data.phone", "call me")),
        ("phone without digits", changed(PATIENT_REGISTERED_FULL, "data.phone", "+()")),
        ("email without @", changed(PATIENT_REGISTERED_FULL, "data.email", "ada.example.org")),
        ("uppercase uuid", changed(PATIENT_REGISTERED_FULL, "data.patientID", PATIENT_ID.upper())),
        ("uuid without hyphens", changed(PATIENT_REGISTERED_FULL, "eventID", PATIENT_ID.replace("-", ""))),
        ("wrong type constant", changed(PATIENT_REGISTERED_FULL, "type", "PatientUpdated")),
        ("wrong schemaVersion", changed(PATIENT_REGISTERED_FULL, "schemaVersion", 2)),
        ("wrong streamType", changed(PATIENT_REGISTERED_FULL, "streamType", "account")),
        ("version 0", changed(PATIENT_REGISTERED_FULL, "version", 0)),
        ("version as a string", changed(PATIENT_REGISTERED_FULL, "version", "1")),
        ("occurredAt without a zone", changed(PATIENT_REGISTERED_FULL, "occurredAt", "2026-11-26T08:31:12")),
        ("occurredAt as a date", changed(PATIENT_REGISTERED_FULL, "occurredAt", "2026-11-26")),
        ("partner actor with a non-uuid id", changed(PATIENT_REGISTERED_FULL, "actor.id", "northside-ehr")),
        ("unknown actor type", changed(PATIENT_REGISTERED_FULL, "actor", {"type": "user", "id": "x"})),
        ("extra actor property", changed(PATIENT_REGISTERED_FULL, "actor.name", "Northside EHR")),
        ("empty idempotencyKey", changed(PATIENT_REGISTERED_FULL, "idempotencyKey", "")),
        ("idempotencyKey with a space", changed(PATIENT_REGISTERED_FULL, "idempotencyKey", "a b")),
        ("idempotencyKey too long", changed(PATIENT_REGISTERED_FULL, "idempotencyKey", "k" * 256)),
        ("null idempotencyKey", changed(PATIENT_REGISTERED_FULL, "idempotencyKey", None)),
        ("data is not an object", changed(PATIENT_REGISTERED_FULL, "data", "Ada Lovelace")),
    ],
    "patient/PatientUpdated.v1.json": [
        ("extra envelope property", changed(PATIENT_UPDATED, "topic", "lis.events.patient")),
        ("missing commandID", changed(PATIENT_UPDATED, "commandID", delete=True)),
        ("missing data.changes", changed(PATIENT_UPDATED, "data.changes", delete=True)),
        ("no changes", changed(PATIENT_UPDATED, "data.changes", {})),
        ("clientID never changes", changed(PATIENT_UPDATED, "data.changes.clientID", "C2")),
        ("firstName cannot be removed", changed(PATIENT_UPDATED, "data.changes.firstName", None)),
        ("dateOfBirth cannot be removed", changed(PATIENT_UPDATED, "data.changes.dateOfBirth", None)),
        ("sex cannot be removed", changed(PATIENT_UPDATED, "data.changes.sex", None)),
        ("locationID cannot be removed", changed(PATIENT_UPDATED, "data.changes.locationID", None)),
        ("empty address instead of null", changed(PATIENT_UPDATED, "data.changes.address", {})),
        ("extra address property", changed(PATIENT_UPDATED, "data.changes.address.zip", "12345")),
        ("invalid new email", changed(PATIENT_UPDATED, "data.changes.email", "not-an-email")),
        ("invalid new sex", changed(PATIENT_UPDATED, "data.changes.sex", "f")),
    ],
    "account/PatientAccountInvited.v1.json": [
        ("extra data property (a token)", changed(PATIENT_ACCOUNT_INVITED, "data.activationToken", "s3cr3t")),
        ("missing data.email", changed(PATIENT_ACCOUNT_INVITED, "data.email", delete=True)),
        ("missing streamID", changed(PATIENT_ACCOUNT_INVITED, "streamID", delete=True)),
        ("null email", changed(PATIENT_ACCOUNT_INVITED, "data.email", None)),
    ],
    "partner/PartnerRegistered.v1.json": [
        ("a secret in the data", changed(PARTNER_REGISTERED, "data.client_secret", "hunter2")),
        ("missing data.scope", changed(PARTNER_REGISTERED, "data.scope", delete=True)),
        ("clientId spelled camelCase", changed(
            changed(PARTNER_REGISTERED, "data.client_id", delete=True), "data.clientId", "lis_9a8b")),
        ("unknown permission", changed(PARTNER_REGISTERED, "data.permissions", ["patients:read", "orders:read"])),
        ("repeated permission", changed(PARTNER_REGISTERED, "data.permissions", ["tests:read", "tests:read"])),
        ("permissions as a comma list", changed(PARTNER_REGISTERED, "data.permissions", "patients:read,tests:read")),
        ("scope set neither * nor a list", changed(PARTNER_REGISTERED, "data.scope.clients", "C1")),
        ("scope list with *", changed(PARTNER_REGISTERED, "data.scope.locations", ["*"])),
        ("scope list with a bad id", changed(PARTNER_REGISTERED, "data.scope.clients", ["C 1"])),
        ("scope list with a repeated id", changed(PARTNER_REGISTERED, "data.scope.clients", ["C1", "C1"])),
        ("extra scope property", changed(PARTNER_REGISTERED, "data.scope.orders", "*")),
        ("missing scope.locations", changed(PARTNER_REGISTERED, "data.scope.locations", delete=True)),
        ("empty name", changed(PARTNER_REGISTERED, "data.name", "")),
    ],
    "partner/PartnerAccessChanged.v1.json": [
        ("extra data property", changed(PARTNER_ACCESS_CHANGED, "data.name", "Northside EHR")),
        ("missing data.permissions", changed(PARTNER_ACCESS_CHANGED, "data.permissions", delete=True)),
        ("missing occurredAt", changed(PARTNER_ACCESS_CHANGED, "occurredAt", delete=True)),
    ],
    "partner/PartnerSecretRotated.v1.json": [
        ("the secret in the data", changed(PARTNER_SECRET_ROTATED, "data.secret", "hunter2")),
        ("missing data.partnerID", changed(PARTNER_SECRET_ROTATED, "data.partnerID", delete=True)),
        ("missing eventID", changed(PARTNER_SECRET_ROTATED, "eventID", delete=True)),
    ],
    "partner/PartnerDisabled.v1.json": [
        ("extra data property", changed(PARTNER_DISABLED, "data.reason", "contract ended")),
        ("missing data", changed(PARTNER_DISABLED, "data", delete=True)),
        ("partner type constant of another event", changed(PARTNER_DISABLED, "type", "PartnerSecretRotated")),
    ],
    "client/ClientRegistered.v1.json": [
        ("extra data property", changed(CLIENT_REGISTERED, "data.locations", ["L1"])),
        ("missing data.name", changed(CLIENT_REGISTERED, "data.name", delete=True)),
        ("clientID too long", changed(CLIENT_REGISTERED, "data.clientID", "C" * 65)),
        ("empty system actor id", changed(CLIENT_REGISTERED, "actor.id", "")),
    ],
    "location/LocationRegistered.v1.json": [
        ("extra data property", changed(LOCATION_REGISTERED, "data.address", {"city": "Springfield"})),
        ("missing data.clientID", changed(LOCATION_REGISTERED, "data.clientID", delete=True)),
        ("missing type", changed(LOCATION_REGISTERED, "type", delete=True)),
        ("name too long", changed(LOCATION_REGISTERED, "data.name", "n" * 201)),
    ],
}


def generated_invalid(valid: dict, schema: dict) -> list[tuple[str, dict]]:
    """Mechanical invalid variants of a valid example."""
    out = [
        ("extra envelope property", changed(valid, "unexpected", True)),
        ("extra data property", changed(valid, "data.unexpected", True)),
    ]
    for field in schema["required"]:
        out.append((f"missing {field}", changed(valid, field, delete=True)))
    data_schema = schema["properties"]["data"]
    for field in data_schema.get("required", []):
        if field in valid["data"]:
            out.append((f"missing data.{field}", changed(valid, f"data.{field}", delete=True)))
    return out


def local_refs_only(node) -> list[str]:
    """Every `$ref` that does not point inside the same document."""
    bad = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("$ref", "$dynamicRef") and not (isinstance(v, str) and v.startswith("#")):
                bad.append(v)
            else:
                bad.extend(local_refs_only(v))
    elif isinstance(node, list):
        for v in node:
            bad.extend(local_refs_only(v))
    return bad


def main() -> int:
    failures: list[str] = []
    files = sorted(p for p in HERE.glob("*/*.json"))
    if not files:
        failures.append("no schema files found")
    rel_names = {p.relative_to(HERE).as_posix() for p in files}
    for name in sorted(set(VALID) | set(INVALID)):
        if name not in rel_names:
            failures.append(f"{name}: examples given but no such schema file")

    checked = 0
    for path in files:
        rel = path.relative_to(HERE).as_posix()
        stream_type = path.parent.name
        m = FILE_NAME.match(path.name)
        if stream_type not in STREAM_TYPES:
            failures.append(f"{rel}: unknown stream type directory {stream_type!r}")
        if not m:
            failures.append(f"{rel}: file name is not <EventType>.v<N>.json")
            continue
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            failures.append(f"{rel}: not JSON: {e}")
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as e:  # SchemaError
            failures.append(f"{rel}: not a valid 2020-12 schema: {e}")
            continue
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            failures.append(f"{rel}: $schema is not draft 2020-12")
        if schema.get("$id") != ID_BASE + rel:
            failures.append(f"{rel}: $id {schema.get('$id')!r} does not match the path")
        for key in ("title", "description"):
            if not schema.get(key):
                failures.append(f"{rel}: no {key}")
        if bad := local_refs_only(schema):
            failures.append(f"{rel}: references outside the file: {bad}")
        props = schema.get("properties", {})
        expected_consts = {
            "type": m["type"],
            "schemaVersion": int(m["version"]),
            "streamType": stream_type,
        }
        for key, want in expected_consts.items():
            if props.get(key, {}).get("const") != want:
                failures.append(f"{rel}: properties.{key} is not const {want!r}")
        if schema.get("additionalProperties") is not False:
            failures.append(f"{rel}: envelope allows additional properties")

        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        valid_examples = VALID.get(rel, [])
        if not valid_examples:
            failures.append(f"{rel}: no valid example")
        invalid_examples = list(INVALID.get(rel, []))
        if not invalid_examples:
            failures.append(f"{rel}: no hand-written invalid example")
        for i, example in enumerate(valid_examples):
            errors = list(validator.iter_errors(example))
            for err in errors:
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                failures.append(f"{rel}: valid example #{i} refused at {where}: {err.message}")
            invalid_examples.extend(generated_invalid(example, schema))
        for label, example in invalid_examples:
            if validator.is_valid(example):
                failures.append(f"{rel}: invalid example accepted: {label}")
        checked += 1
        print(f"ok  {rel}: {len(valid_examples)} valid, {len(invalid_examples)} invalid examples")

    if failures:
        print(f"\n{len(failures)} failure(s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"\nall {checked} schemas pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
