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
STREAM_TYPES = {"patient", "account", "partner", "client", "location", "order", "catalog"}

# Realistic ids, reused so that the examples hang together.
PATIENT_ID = "0b7f3c1e-5d2a-4f8e-9a61-3c4d5e6f7a81"
ACCOUNT_ID = "6f1d2c3b-4a59-4e7d-8c6b-5a4f3e2d1c0b"
PARTNER_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CLIENT_STREAM_ID = "3e5d7c9b-1a2f-5b4c-8d6e-7f8a9b0c1d2e"  # v5, derived from clientID
LOCATION_STREAM_ID = "7c2e4a6b-8d0f-5e1a-9b3c-4d5e6f7a8b9c"  # v5, derived from locationID
ORDER_ID = "4b8e2f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
ORDER_ID_2 = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"
CATALOG_STREAM_ID = "5d6e7f80-9a1b-5c2d-8e3f-4a5b6c7d8e9f"  # v5, derived from the test code


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

# Orders: one order through its whole life, and a second one canceled.
LAB = {"type": "partner", "id": "d7c6b5a4-9382-4716-a5b4-c3d2e1f0a9b8"}  # a lab with results:write

ORDER_PLACED_FULL = envelope(
    "OrderPlaced", "order", ORDER_ID, 1,
    {
        "orderID": ORDER_ID,
        "patientID": PATIENT_ID,
        "clientID": "C1",
        "locationID": "L1",
        "accessionNumber": "A-2026-000123",
        "externalOrderID": "EHR-77",
        "tests": ["CBC", "LIPID", "COVID19"],
        "specimen": {"type": "blood", "collectedAt": "2026-11-26T08:30:00Z"},
        "priority": "routine",
    },
    event_id="a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    command_id="b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
    actor=PARTNER,
    idempotency_key="order-EHR-77",
)

ORDER_PLACED_MINIMAL = envelope(
    "OrderPlaced", "order", ORDER_ID_2, 1,
    {
        "orderID": ORDER_ID_2,
        "patientID": PATIENT_ID,
        "clientID": "clinic.north_01",
        "locationID": "north-01.draw-site",
        "accessionNumber": "A-20261126-000124",
        "tests": ["TSH"],
        "specimen": {"type": "serum"},
        "priority": "stat",
    },
    event_id="c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e60",
    command_id="d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70",
    actor=PARTNER,
    occurred_at="2026-11-26T09:00:00Z",
)

ORDER_DETAILS_CHANGED = envelope(
    "OrderDetailsChanged", "order", ORDER_ID, 2,
    {
        "orderID": ORDER_ID,
        "changes": {
            "specimenType": "whole blood",
            "collectedAt": "2026-11-26T08:45:00Z",
            "priority": "urgent",
            "externalOrderID": "EHR-77b",
        },
    },
    event_id="e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a81",
    command_id="f6a7b8c9-d0e1-4f2a-9b3c-4d5e6f7a8b92",
    actor=PARTNER,
)

ORDER_DETAILS_CHANGED_REMOVALS = envelope(
    "OrderDetailsChanged", "order", ORDER_ID_2, 2,
    {"orderID": ORDER_ID_2, "changes": {"collectedAt": None, "externalOrderID": None}},
    event_id="a7b8c9d0-e1f2-4a3b-8c4d-5e6f7a8b9ca3",
    command_id="b8c9d0e1-f2a3-4b4c-9d5e-6f7a8b9cadb4",
    actor=PARTNER,
)

ORDER_DETAILS_CHANGED_ONE_FIELD = envelope(
    "OrderDetailsChanged", "order", ORDER_ID_2, 3,
    {"orderID": ORDER_ID_2, "changes": {"priority": "routine"}},
    event_id="c9d0e1f2-a3b4-4c5d-8e6f-7a8b9cadbec5",
    command_id="d0e1f2a3-b4c5-4d6e-9f7a-8b9cadbecfd6",
    actor=PARTNER,
)

SPECIMEN_COLLECTED = envelope(
    "SpecimenCollected", "order", ORDER_ID, 3,
    {"orderID": ORDER_ID, "collectedAt": "2026-11-26T08:45:00Z"},
    event_id="e1f2a3b4-c5d6-4e7f-8a8b-9cadbecfd0e7",
    command_id="f2a3b4c5-d6e7-4f8a-9b9c-adbecfd0e1f8",
    actor=LAB,
)

SPECIMEN_RECEIVED = envelope(
    "SpecimenReceived", "order", ORDER_ID, 4,
    {"orderID": ORDER_ID},
    event_id="a3b4c5d6-e7f8-4a9b-8cad-becfd0e1f2a9",
    command_id="b4c5d6e7-f8a9-4bac-9dbe-cfd0e1f2a3ba",
    actor=LAB,
)

ORDER_STARTED = envelope(
    "OrderStarted", "order", ORDER_ID, 5,
    {"orderID": ORDER_ID},
    event_id="c5d6e7f8-a9ba-4cbd-8ecf-d0e1f2a3b4cb",
    command_id="d6e7f8a9-bacb-4dce-9fd0-e1f2a3b4c5dc",
    actor=LAB,
    idempotency_key="start-A-2026-000123",
)

HGB_LL = {"code": "HGB", "test": "CBC", "value": "6.5", "unit": "g/dL",
          "referenceRange": {"low": 12.0, "high": 15.5}, "flag": "LL"}
RESULTS_RECORDED = envelope(
    "ResultsRecorded", "order", ORDER_ID, 6,
    {
        "orderID": ORDER_ID,
        "results": [
            HGB_LL,
            {"code": "WBC", "test": "CBC", "value": 7.2, "unit": "10^9/L",
             "referenceRange": {"low": 4.0, "high": 11.0}, "flag": "N"},
            {"code": "PLT", "test": "CBC", "value": "<0.5", "unit": "10^9/L",
             "referenceRange": {"low": 150.0, "high": 400.0}, "flag": "LL"},
            {"code": "HCT", "test": "CBC", "value": ">=55", "unit": "%",
             "referenceRange": {"low": 36.0, "high": 46.0}, "flag": "H"},
            {"code": "CHOL", "test": "LIPID", "value": "5.20", "unit": "mg/dL",
             "referenceRange": {"high": 200.0}, "flag": "N"},
            {"code": "HDL", "test": "LIPID", "value": -1, "unit": "mg/dL",
             "referenceRange": {"low": 50.0}, "flag": "L"},
            {"code": "SARSCOV2", "test": "COVID19", "value": "Detected", "flag": "A"},
        ],
    },
    event_id="e7f8a9ba-cbdc-4edf-80e1-f2a3b4c5d6ed",
    command_id="f8a9bacb-dced-4fe0-91f2-a3b4c5d6e7fe",
    actor=LAB,
)

# A patient no range applies to (a child, or a sex-specific range and a
# patient of unknown sex): no range, no flag; a text analyte without normal
# values, or with a numeric value.
RESULTS_RECORDED_UNFLAGGED = envelope(
    "ResultsRecorded", "order", ORDER_ID_2, 4,
    {
        "orderID": ORDER_ID_2,
        "results": [
            {"code": "TSH", "test": "TSH", "value": "2.1", "unit": "mIU/L"},
            {"code": "RBC", "test": "CBC", "value": 12, "unit": "10^12/L"},
            {"code": "NOTE", "test": "TSH", "value": "Slightly hemolysed"},
            {"code": "SARSCOV2", "test": "COVID19", "value": 0, "flag": "A"},
            {"code": "SARSCOV2B", "test": "COVID19", "value": " not detected ", "flag": "N"},
        ],
    },
    event_id="a9bacbdc-edfe-4a01-82a3-b4c5d6e7f80f",
    command_id="bacbdced-fe0f-4b12-93b4-c5d6e7f8a910",
    actor=LAB,
)

RESULTS_FINALIZED = envelope(
    "ResultsFinalized", "order", ORDER_ID, 7,
    {"orderID": ORDER_ID},
    event_id="cbdcedfe-0f10-4c23-84c5-d6e7f8a9ba21",
    command_id="dcedfe0f-1021-4d34-95d6-e7f8a9bacb32",
    actor=LAB,
)

RESULTS_CORRECTED = envelope(
    "ResultsCorrected", "order", ORDER_ID, 8,
    {
        "orderID": ORDER_ID,
        "reason": "Sample mix-up: re-run on the right tube.",
        "results": [
            {"code": "HGB", "test": "CBC", "value": "13.1", "unit": "g/dL",
             "referenceRange": {"low": 12.0, "high": 15.5}, "flag": "N"},
            {"code": "LDL", "test": "LIPID", "value": 99.5, "unit": "mg/dL",
             "referenceRange": {"high": 100.0}, "flag": "N"},
        ],
        "previous": [HGB_LL],
    },
    event_id="edfe0f10-2132-4e45-86e7-f8a9bacbdc43",
    command_id="fe0f1021-3243-4f56-97f8-a9bacbdced54",
    actor=LAB,
    idempotency_key="correct-1",
)

RESULTS_CORRECTED_NEW_ANALYTE = envelope(
    "ResultsCorrected", "order", ORDER_ID, 9,
    {
        "orderID": ORDER_ID,
        "reason": "Triglycerides were missing from the report.",
        "results": [{"code": "TRIG", "test": "LIPID", "value": "<=150", "unit": "mg/dL",
                     "referenceRange": {"high": 150.0}, "flag": "N"}],
        "previous": [],
    },
    event_id="0f102132-4354-4a67-88f9-bacbdcedfe65",
    command_id="10213243-5465-4b78-990a-cbdcedfe0f76",
    actor=LAB,
)

ORDER_CANCELED = envelope(
    "OrderCanceled", "order", ORDER_ID_2, 4,
    {"orderID": ORDER_ID_2, "reason": "Patient left before the draw."},
    event_id="21324354-6576-4c89-8a1b-dcedfe0f1087",
    command_id="32435465-7687-4d9a-9b2c-edfe0f102198",
    actor=PARTNER,
)

CBC_DEFINITION = {
    "code": "CBC",
    "name": "Complete blood count",
    "specimenType": "whole blood",
    "analytes": [
        {"code": "WBC", "name": "White blood cell count",
         "kind": {"type": "numeric", "unit": "10^9/L",
                  "ranges": [{"minAgeDays": 6570, "low": 4.0, "high": 11.0}]}},
        {"code": "HGB", "name": "Hemoglobin",
         "kind": {"type": "numeric", "unit": "g/dL",
                  "ranges": [
                      {"sex": "male", "minAgeDays": 6570, "low": 13.5, "high": 17.5},
                      {"sex": "female", "minAgeDays": 6570, "low": 12.0, "high": 15.5},
                      {"minAgeDays": 0, "maxAgeDays": 6570, "low": 11.0},
                  ],
                  "criticalLow": 7.0, "criticalHigh": 20.0}},
        {"code": "RETIC", "name": "Reticulocyte count",
         "kind": {"type": "numeric", "unit": "%", "ranges": []}},
    ],
}

CATALOG_TEST_DEFINED = envelope(
    "CatalogTestDefined", "catalog", CATALOG_STREAM_ID, 1,
    CBC_DEFINITION,
    event_id="43546576-8798-4eab-8c3d-fe0f102132a9",
    command_id="54657687-98a9-4fbc-9d4e-0f10213243ba",
    actor=OPERATOR,
)

CATALOG_TEST_DEFINED_TEXT = envelope(
    "CatalogTestDefined", "catalog", "6e7f8091-a2b3-5c4d-8e5f-6a7b8c9d0e1f", 1,
    {
        "code": "COVID19",
        "name": "SARS-CoV-2 RNA, qualitative PCR",
        "specimenType": "nasopharyngeal swab",
        "analytes": [
            {"code": "SARSCOV2", "name": "SARS-CoV-2 RNA",
             "kind": {"type": "text", "normal": ["Not detected"]}},
            {"code": "COMMENT", "name": "Comment", "kind": {"type": "text", "normal": []}},
        ],
    },
    event_id="65768798-a9ba-40cd-8e5f-102132435bcb",
    command_id="768798a9-bacb-41de-9f60-2132435465dc",
    actor=SYSTEM | {"id": "lis-up"},
)

CATALOG_TEST_REVISED = envelope(
    "CatalogTestRevised", "catalog", CATALOG_STREAM_ID, 2,
    CBC_DEFINITION | {"name": "Complete blood count (automated)"},
    event_id="8798a9ba-cbdc-42ef-8071-32435465a6ed",
    command_id="98a9bacb-dced-43f0-9182-435465768efe",
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
    "order/OrderPlaced.v1.json": [ORDER_PLACED_FULL, ORDER_PLACED_MINIMAL],
    "order/OrderDetailsChanged.v1.json": [
        ORDER_DETAILS_CHANGED, ORDER_DETAILS_CHANGED_REMOVALS, ORDER_DETAILS_CHANGED_ONE_FIELD],
    "order/SpecimenCollected.v1.json": [SPECIMEN_COLLECTED],
    "order/SpecimenReceived.v1.json": [SPECIMEN_RECEIVED],
    "order/OrderStarted.v1.json": [ORDER_STARTED],
    "order/ResultsRecorded.v1.json": [RESULTS_RECORDED, RESULTS_RECORDED_UNFLAGGED],
    "order/ResultsFinalized.v1.json": [RESULTS_FINALIZED],
    "order/ResultsCorrected.v1.json": [RESULTS_CORRECTED, RESULTS_CORRECTED_NEW_ANALYTE],
    "order/OrderCanceled.v1.json": [ORDER_CANCELED],
    "catalog/CatalogTestDefined.v1.json": [CATALOG_TEST_DEFINED, CATALOG_TEST_DEFINED_TEXT],
    "catalog/CatalogTestRevised.v1.json": [CATALOG_TEST_REVISED],
}

# --- hand-written invalid examples ------------------------------------------


def changed(event: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A copy of `event` with the dotted `path` set to `value` (or deleted);
    a number in the path indexes a list (`data.results.0.value`)."""
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    key = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    else:
        node[key] = value
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
    "order/OrderPlaced.v1.json": [
        ("no tests", changed(ORDER_PLACED_FULL, "data.tests", [])),
        ("a test ordered twice", changed(ORDER_PLACED_FULL, "data.tests", ["CBC", "CBC"])),
        ("tests as request objects", changed(ORDER_PLACED_FULL, "data.tests", [{"code": "CBC"}])),
        ("lowercase test code", changed(ORDER_PLACED_FULL, "data.tests", ["cbc"])),
        ("test code too long", changed(ORDER_PLACED_FULL, "data.tests", ["T" * 33])),
        ("priority outside the enum", changed(ORDER_PLACED_FULL, "data.priority", "asap")),
        ("missing specimen.type", changed(ORDER_PLACED_FULL, "data.specimen.type", delete=True)),
        ("blank specimen.type", changed(ORDER_PLACED_FULL, "data.specimen.type", "  ")),
        ("specimen.type too long", changed(ORDER_PLACED_FULL, "data.specimen.type", "s" * 65)),
        ("extra specimen property", changed(ORDER_PLACED_FULL, "data.specimen.volume", "5 mL")),
        ("null collectedAt (omitted, never null)", changed(ORDER_PLACED_FULL, "data.specimen.collectedAt", None)),
        ("collectedAt without a zone", changed(ORDER_PLACED_FULL, "data.specimen.collectedAt", "2026-11-26T08:30:00")),
        ("null externalOrderID", changed(ORDER_PLACED_FULL, "data.externalOrderID", None)),
        ("accessionNumber with a space", changed(ORDER_PLACED_FULL, "data.accessionNumber", "A 1")),
        ("accessionNumber too long", changed(ORDER_PLACED_FULL, "data.accessionNumber", "A" * 65)),
        ("locationID with a space", changed(ORDER_PLACED_FULL, "data.locationID", "L 1")),
        ("a status in the data", changed(ORDER_PLACED_FULL, "data.status", "ordered")),
        ("streamType of the topic", changed(ORDER_PLACED_FULL, "streamType", "orders")),
    ],
    "order/OrderDetailsChanged.v1.json": [
        ("no changes", changed(ORDER_DETAILS_CHANGED, "data.changes", {})),
        ("priority cannot be removed", changed(ORDER_DETAILS_CHANGED, "data.changes.priority", None)),
        ("specimenType cannot be removed", changed(ORDER_DETAILS_CHANGED, "data.changes.specimenType", None)),
        ("specimen as in the request", changed(ORDER_DETAILS_CHANGED, "data.changes.specimen", {"type": "serum"})),
        ("status never changes here", changed(ORDER_DETAILS_CHANGED, "data.changes.status", "collected")),
        ("tests never change", changed(ORDER_DETAILS_CHANGED, "data.changes.tests", ["TSH"])),
        ("invalid new priority", changed(ORDER_DETAILS_CHANGED, "data.changes.priority", "ROUTINE")),
        ("collectedAt as a date", changed(ORDER_DETAILS_CHANGED, "data.changes.collectedAt", "2026-11-26")),
        ("externalOrderID empty", changed(ORDER_DETAILS_CHANGED, "data.changes.externalOrderID", "")),
    ],
    "order/SpecimenCollected.v1.json": [
        ("null collectedAt", changed(SPECIMEN_COLLECTED, "data.collectedAt", None)),
        ("collectedAt not a timestamp", changed(SPECIMEN_COLLECTED, "data.collectedAt", "yesterday")),
        ("orderID not a uuid", changed(SPECIMEN_COLLECTED, "data.orderID", "A-2026-000123")),
    ],
    "order/SpecimenReceived.v1.json": [
        ("extra data property", changed(SPECIMEN_RECEIVED, "data.receivedAt", "2026-11-26T10:00:00Z")),
        ("missing data.orderID", changed(SPECIMEN_RECEIVED, "data.orderID", delete=True)),
    ],
    "order/OrderStarted.v1.json": [
        ("extra data property", changed(ORDER_STARTED, "data.status", "in_progress")),
        ("wrong type constant", changed(ORDER_STARTED, "type", "OrderStart")),
    ],
    "order/ResultsRecorded.v1.json": [
        ("no results", changed(RESULTS_RECORDED, "data.results", [])),
        ("results not a list", changed(RESULTS_RECORDED, "data.results", HGB_LL)),
        ("value true", changed(RESULTS_RECORDED, "data.results.0.value", True)),
        ("null value", changed(RESULTS_RECORDED, "data.results.0.value", None)),
        ("value as an object", changed(RESULTS_RECORDED, "data.results.0.value", {"value": 6.5})),
        ("missing value", changed(RESULTS_RECORDED, "data.results.0.value", delete=True)),
        ("missing test", changed(RESULTS_RECORDED, "data.results.0.test", delete=True)),
        ("missing code", changed(RESULTS_RECORDED, "data.results.0.code", delete=True)),
        ("lowercase analyte code", changed(RESULTS_RECORDED, "data.results.0.code", "hgb")),
        ("numeric result with a space after <", changed(RESULTS_RECORDED, "data.results.2.value", "< 0.5")),
        ("numeric result with text", changed(RESULTS_RECORDED, "data.results.0.value", "lots")),
        ("numeric result with a decimal comma", changed(RESULTS_RECORDED, "data.results.0.value", "6,5")),
        ("numeric result with a bare point", changed(RESULTS_RECORDED, "data.results.0.value", "6.")),
        ("numeric result with two comparators", changed(RESULTS_RECORDED, "data.results.0.value", "<<6.5")),
        ("blank text result", changed(RESULTS_RECORDED, "data.results.6.value", "   ")),
        ("text result too long", changed(RESULTS_RECORDED, "data.results.6.value", "x" * 201)),
        ("control character in a text result", changed(RESULTS_RECORDED, "data.results.6.value", "De\ntected")),
        ("empty unit", changed(RESULTS_RECORDED, "data.results.0.unit", "")),
        ("null unit", changed(RESULTS_RECORDED, "data.results.0.unit", None)),
        ("flag outside the enum", changed(RESULTS_RECORDED, "data.results.0.flag", "X")),
        ("lowercase flag", changed(RESULTS_RECORDED, "data.results.1.flag", "n")),
        ("numeric flag without its range", changed(RESULTS_RECORDED, "data.results.0.referenceRange", delete=True)),
        ("numeric range without a flag", changed(RESULTS_RECORDED, "data.results.0.flag", delete=True)),
        ("numeric result flagged A", changed(RESULTS_RECORDED, "data.results.1.flag", "A")),
        ("text result flagged H", changed(RESULTS_RECORDED, "data.results.6.flag", "H")),
        ("text result with a range", changed(RESULTS_RECORDED, "data.results.6.referenceRange", {"low": 1.0})),
        ("empty referenceRange", changed(RESULTS_RECORDED, "data.results.0.referenceRange", {})),
        ("referenceRange with a critical limit", changed(RESULTS_RECORDED, "data.results.0.referenceRange.criticalLow", 7.0)),
        ("referenceRange limit as a string", changed(RESULTS_RECORDED, "data.results.0.referenceRange.low", "12.0")),
        ("null flag", changed(RESULTS_RECORDED, "data.results.1.flag", None)),
        ("extra result property", changed(RESULTS_RECORDED, "data.results.0.status", "final")),
    ],
    "order/ResultsFinalized.v1.json": [
        ("results in the data", changed(RESULTS_FINALIZED, "data.results", [])),
        ("missing data.orderID", changed(RESULTS_FINALIZED, "data.orderID", delete=True)),
    ],
    "order/ResultsCorrected.v1.json": [
        ("blank reason", changed(RESULTS_CORRECTED, "data.reason", " ")),
        ("reason too long", changed(RESULTS_CORRECTED, "data.reason", "r" * 501)),
        ("null reason", changed(RESULTS_CORRECTED, "data.reason", None)),
        ("no results", changed(RESULTS_CORRECTED, "data.results", [])),
        ("null previous", changed(RESULTS_CORRECTED, "data.previous", None)),
        ("previous value true", changed(RESULTS_CORRECTED, "data.previous.0.value", True)),
        ("corrected numeric value with text", changed(RESULTS_CORRECTED, "data.results.0.value", "normal")),
        ("extra result property", changed(RESULTS_CORRECTED, "data.results.0.previousValue", "6.5")),
    ],
    "order/OrderCanceled.v1.json": [
        ("empty reason", changed(ORDER_CANCELED, "data.reason", "")),
        ("control character in the reason", changed(ORDER_CANCELED, "data.reason", "left\u0007")),
        ("reason as a number", changed(ORDER_CANCELED, "data.reason", 3)),
        ("extra data property", changed(ORDER_CANCELED, "data.canceledBy", "jdoe")),
    ],
    "catalog/CatalogTestDefined.v1.json": [
        ("no analytes", changed(CATALOG_TEST_DEFINED, "data.analytes", [])),
        ("lowercase code", changed(CATALOG_TEST_DEFINED, "data.code", "cbc")),
        ("code with a space", changed(CATALOG_TEST_DEFINED, "data.code", "C BC")),
        ("blank name", changed(CATALOG_TEST_DEFINED, "data.name", " ")),
        ("specimenType too long", changed(CATALOG_TEST_DEFINED, "data.specimenType", "s" * 65)),
        ("specimen_type spelled snake_case", changed(
            changed(CATALOG_TEST_DEFINED, "data.specimenType", delete=True), "data.specimen_type", "whole blood")),
        ("unknown analyte kind", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.type", "range")),
        ("analyte kind without its type", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.type", delete=True)),
        ("analyte kind type capitalised", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.type", "Numeric")),
        ("numeric analyte without a unit", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.unit", delete=True)),
        ("numeric analyte without ranges", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges", delete=True)),
        ("unit too long", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.unit", "u" * 33)),
        ("numeric analyte with normal values", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.normal", ["0"])),
        ("text analyte with a unit", changed(CATALOG_TEST_DEFINED_TEXT, "data.analytes.0.kind.unit", "copies/mL")),
        ("text analyte without normal values", changed(CATALOG_TEST_DEFINED_TEXT, "data.analytes.0.kind.normal", delete=True)),
        ("blank normal value", changed(CATALOG_TEST_DEFINED_TEXT, "data.analytes.0.kind.normal", [""])),
        ("null normal values", changed(CATALOG_TEST_DEFINED_TEXT, "data.analytes.0.kind.normal", None)),
        ("range without limits", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges", [{"sex": "male"}])),
        ("range sex outside the enum", changed(CATALOG_TEST_DEFINED, "data.analytes.1.kind.ranges.0.sex", "M")),
        ("negative age", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges.0.minAgeDays", -1)),
        ("fractional age", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges.0.minAgeDays", 1.5)),
        ("age in years", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges.0.minAgeYears", 18)),
        ("null range limit (omitted, never null)", changed(CATALOG_TEST_DEFINED, "data.analytes.0.kind.ranges.0.high", None)),
        ("criticalLow as a string", changed(CATALOG_TEST_DEFINED, "data.analytes.1.kind.criticalLow", "7")),
        ("critical_high spelled snake_case", changed(CATALOG_TEST_DEFINED, "data.analytes.1.kind.critical_high", 20.0)),
        ("extra analyte property", changed(CATALOG_TEST_DEFINED, "data.analytes.0.unit", "10^9/L")),
        ("analyte without a name", changed(CATALOG_TEST_DEFINED, "data.analytes.0.name", delete=True)),
    ],
    "catalog/CatalogTestRevised.v1.json": [
        ("no analytes", changed(CATALOG_TEST_REVISED, "data.analytes", [])),
        ("missing data.code", changed(CATALOG_TEST_REVISED, "data.code", delete=True)),
        ("the previous definition alongside", changed(CATALOG_TEST_REVISED, "data.previous", CBC_DEFINITION)),
        ("wrong streamType", changed(CATALOG_TEST_REVISED, "streamType", "order")),
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
