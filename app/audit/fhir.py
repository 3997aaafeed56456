"""Audit rows as FHIR R4 AuditEvent resources, and search results as a Bundle.

Types and subtypes come from the DICOM audit vocabulary (DCM, as IHE ATNA uses it)
and FHIR's RESTful interactions; the trail's own action name is kept as a second
subtype in a ClinChat code system, so nothing is lost in the mapping. Break-glass
events carry ``purposeOfEvent`` HL7 v3 ActReason ``BTG``; each resource carries its
chain link (hash and previous hash) in a ClinChat extension, so an export can be
checked against syslog and ``clinchat-admin audit verify``.

Nothing here adds text a user typed: ``detail`` holds ids and counts, and the one
free-text field the trail keeps (a break-glass reason) is stored PHI-redacted and is
redacted again on the way out.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from app.models import AuditEvent
from app.phi import redact

NAMESPACE = "https://clinchat.invalid/fhir"
CHAIN_EXTENSION = f"{NAMESPACE}/StructureDefinition/audit-chain"
ACTION_SYSTEM = f"{NAMESPACE}/CodeSystem/audit-action"
ROLE_SYSTEM = f"{NAMESPACE}/CodeSystem/role"
USERNAME_SYSTEM = f"{NAMESPACE}/sid/username"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
FHIR_JSON = "application/fhir+json"

Coding = dict[str, str]


def _coding(system: str, code: str, display: str) -> Coding:
    return {"system": system, "code": code, "display": display}


APPLICATION_ACTIVITY = _coding(DCM, "110100", "Application Activity")
PATIENT_RECORD = _coding(DCM, "110110", "Patient Record")
QUERY = _coding(DCM, "110112", "Query")
SECURITY_ALERT = _coding(DCM, "110113", "Security Alert")
USER_AUTHENTICATION = _coding(DCM, "110114", "User Authentication")
REST_OPERATION = _coding(EVENT_TYPE, "rest", "RESTful Operation")
LOGIN = _coding(DCM, "110122", "Login")
LOGOUT = _coding(DCM, "110123", "Logout")
EMERGENCY_STARTED = _coding(DCM, "110127", "Emergency Override Started")
EMERGENCY_STOPPED = _coding(DCM, "110138", "Emergency Override Stopped")
SECURITY_ATTRIBUTES = _coding(DCM, "110137", "User Security Attributes Changed")
BREAK_THE_GLASS = _coding(ACT_REASON, "BTG", "break the glass")


def _rest(code: str) -> Coding:
    return _coding(RESTFUL, code, code)


# action -> (type, DCM subtype or None, FHIR action). RESTful subtypes are derived
# from the verb (``_interaction``); an action not listed here is a RESTful operation.
RULES: dict[str, tuple[Coding, Coding | None, str]] = {
    "auth.login": (USER_AUTHENTICATION, LOGIN, "E"),
    "auth.logout": (USER_AUTHENTICATION, LOGOUT, "E"),
    "auth.lockout": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "E"),
    "break_glass.start": (SECURITY_ALERT, EMERGENCY_STARTED, "E"),
    "break_glass.end": (SECURITY_ALERT, EMERGENCY_STOPPED, "E"),
    "user.create": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "C"),
    "user.totp_enrol": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "C"),
    "user.totp_reset": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "D"),
    "token.create": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "C"),
    "token.revoke": (SECURITY_ALERT, SECURITY_ATTRIBUTES, "D"),
    # conversations and messages may hold patient information
    "conversation.create": (PATIENT_RECORD, None, "C"),
    "conversation.read": (PATIENT_RECORD, None, "R"),
    "conversation.delete": (PATIENT_RECORD, None, "D"),
    "message.create": (PATIENT_RECORD, None, "C"),
    # feedback keeps a snapshot of the question and answer
    "feedback.create": (PATIENT_RECORD, None, "C"),
    "feedback.update": (PATIENT_RECORD, None, "U"),
    "feedback.read": (PATIENT_RECORD, None, "R"),
    "feedback.review": (PATIENT_RECORD, None, "U"),
    "facade.chat": (QUERY, None, "E"),
    "audit.read": (QUERY, None, "R"),
    "audit.verify": (QUERY, None, "E"),
    "kb.reindex": (APPLICATION_ACTIVITY, None, "E"),
    "document.create": (REST_OPERATION, None, "C"),
    "document.version": (REST_OPERATION, None, "U"),
    "document.ingest": (REST_OPERATION, None, "U"),
    "document.retire": (REST_OPERATION, None, "U"),
    "document.move": (REST_OPERATION, None, "U"),
    "document.read": (REST_OPERATION, None, "R"),
}
_VERB_ACTION = {
    "create": "C",
    "read": "R",
    "update": "U",
    "version": "U",
    "retire": "U",
    "delete": "D",
    "revoke": "D",
}
_ACTION_INTERACTION = {"C": "create", "R": "read", "U": "update", "D": "delete"}
OUTCOMES = {"success": "0", "failure": "4"}  # anything else: "8", serious failure


def _interaction(row: AuditEvent, action: str) -> tuple[str, str | None]:
    """The FHIR action and RESTful interaction: a read of no one thing is a search."""
    if action == "R" and (not row.entity_id or "listed" in (row.detail or {})):
        return "E", "search-type"
    if row.action == "audit.verify":
        return "E", "operation"
    return action, _ACTION_INTERACTION.get(action)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def instant(row: AuditEvent) -> str:
    return row.ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def audit_event(row: AuditEvent) -> dict[str, Any]:
    """One audit row as a FHIR R4 AuditEvent resource (a JSON-ready dict)."""
    verb = row.action.rpartition(".")[2]
    event_type, dcm_subtype, action = RULES.get(
        row.action, (REST_OPERATION, None, _VERB_ACTION.get(verb, "E"))
    )
    action, interaction = _interaction(row, action)
    subtype = [c for c in (dcm_subtype, _rest(interaction) if interaction else None) if c]
    subtype.append(_coding(ACTION_SYSTEM, row.action, row.action))
    detail = dict(row.detail or {})
    reason = detail.pop("reason", None) if row.action.startswith("break_glass.") else None

    agent: dict[str, Any] = {
        "who": {
            "identifier": {"system": USERNAME_SYSTEM, "value": row.actor},
            "display": row.actor,
        },
        "requestor": True,
    }
    if row.actor_roles:
        agent["role"] = [{"coding": [_coding(ROLE_SYSTEM, r, r)]} for r in row.actor_roles]
    if row.source_ip:
        agent["network"] = {"address": row.source_ip, "type": "2"}  # 2: an IP address

    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row.id),
        "extension": [
            {
                "url": CHAIN_EXTENSION,
                "extension": [
                    {"url": "hash", "valueString": row.hash},
                    {"url": "previousHash", "valueString": row.prev_hash},
                ],
            }
        ],
        "type": event_type,
        "subtype": subtype,
        "action": action,
        "recorded": instant(row),
        "outcome": OUTCOMES.get(row.outcome, "8"),
        "agent": [agent],
        "source": {
            "site": "clinchat",
            "observer": {"display": "ClinChat"},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if row.outcome != "success":
        resource["outcomeDesc"] = _value(detail.get("reason", row.outcome))
    if row.break_glass or row.action == "break_glass.start":
        purpose: dict[str, Any] = {"coding": [BREAK_THE_GLASS]}
        if reason:
            purpose["text"] = redact(_value(reason))
        resource["purposeOfEvent"] = [purpose]
    if row.entity_type or detail:
        entity: dict[str, Any] = {
            "type": (
                _coding(ENTITY_TYPE, "1", "Person")
                if row.entity_type == "user"
                else _coding(ENTITY_TYPE, "2", "System Object")
            )
        }
        if row.entity_type:
            entity["what"] = {
                "identifier": {
                    "system": f"{NAMESPACE}/sid/{row.entity_type}",
                    "value": row.entity_id,
                },
                "display": f"{row.entity_type}/{row.entity_id}"
                if row.entity_id
                else row.entity_type,
            }
        if detail:
            entity["detail"] = [
                {"type": key, "valueString": _value(value)} for key, value in sorted(detail.items())
            ]
        resource["entity"] = [entity]
    return resource


def bundle(
    rows: list[AuditEvent], total: int, self_url: str, next_url: str | None, base_url: str
) -> dict[str, Any]:
    """A searchset Bundle of ``rows``; ``next_url`` when there may be more."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url.rstrip('/')}/{row.id}",
                "resource": audit_event(row),
                "search": {"mode": "match"},
            }
            for row in rows
        ],
    }
