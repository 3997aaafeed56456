"""Which controls a task serves, read from its tags and name; how statuses merge.

Shared by the control_report callback and by the tests that list every
control the roles carry (tests/audit). Pure Python: no Ansible import.

Tags: ``cis_<id>`` (CIS Debian 12), ``lynis_<test>`` (``lynis_krnl_6000`` is
KRNL-6000), ``clinchat_<x>_<n>`` (CLINCHAT-X-N), ``hipaa_164.312.<spec>``
and the CIS level (``level1-server``, ``level2-server``). Names:
``"<id> | PATCH|AUDIT | <title>"``. A task that serves a HIPAA specification
but has no id of its own (``"App | PATCH | Ensure ..."``) is a control of its
own, named by the name's first field and its title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STATUSES = ("error", "drift", "pass", "not applicable")  # worst first
LEVELS = ("level1-server", "level2-server")

_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")
_ID_FIELD = re.compile(r"^(\d+(\.\d+)*(\.x)?|[A-Z][A-Z0-9]*(-[A-Z0-9]+)+)$")
# Ids a role's message may name, e.g. "(1.5.1, 1.5.2, KRNL-6000)".
_ID_IN_TEXT = re.compile(r"\b(\d+(?:\.\d+)+|[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\b")


@dataclass(frozen=True)
class ControlRef:
    """One control a task serves."""

    id: str
    cis: str | None = None
    hipaa: tuple[str, ...] = ()
    level: str | None = None


@dataclass
class TaskName:
    """``"<first> | <kind> | <title>"``; kind is PATCH or AUDIT where the name says so."""

    first: str
    kind: str | None
    title: str


def split_name(name: str) -> TaskName:
    parts = [p.strip() for p in name.split(" | ", 2)]
    if len(parts) == 3 and parts[1] in ("PATCH", "AUDIT"):
        return TaskName(parts[0], parts[1], parts[2])
    if len(parts) >= 2:
        return TaskName(parts[0], None, " | ".join(parts[1:]))
    return TaskName("", None, name.strip())


def _placeholder(match: re.Match[str]) -> str:
    """``{{ pki_key_group }}`` -> ``<pki_key_group>``; an expression -> ``<...>``."""
    simple = re.match(r"^\{\{\s*([A-Za-z_][\w.]*)\s*(\|[^}]*)?\}\}$", match.group(0))
    return f"<{simple.group(1)}>" if simple else "<...>"


def stable_title(title: str) -> str:
    """The title with placeholders for its templated parts: the raw and rendered names agree."""
    text = _TEMPLATE.sub(_placeholder, title)
    return re.sub(r"\s+", " ", text).strip()


def id_field(name: str) -> str | None:
    """The name's first field where it is a control id (``5.1.20``, ``KRNL-6000``, ``1.5.x``)."""
    first = split_name(name).first
    return first if _ID_FIELD.match(first) else None


def hipaa_specs(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({t.removeprefix("hipaa_") for t in tags if t.startswith("hipaa_")}))


def controls_of(tags: list[str] | tuple[str, ...], name: str) -> list[ControlRef]:
    """The controls a task with these tags and this (raw) name serves; [] for none."""
    tags = [str(t) for t in tags]
    hipaa = hipaa_specs(tags)
    level = next((t for t in tags if t in LEVELS), None)
    refs: list[ControlRef] = []
    for tag in tags:
        if tag.startswith("cis_"):
            cis = tag.removeprefix("cis_")
            refs.append(ControlRef(cis, cis, hipaa, level))
        elif tag.startswith("lynis_"):
            refs.append(
                ControlRef(tag.removeprefix("lynis_").upper().replace("_", "-"), None, hipaa, level)
            )
        elif tag.startswith("clinchat_"):
            refs.append(ControlRef(tag.upper().replace("_", "-"), None, hipaa, level))
    if refs or not hipaa:
        return refs
    parts = split_name(name)
    if parts.first and _ID_FIELD.match(parts.first):
        return [ControlRef(parts.first, None, hipaa, level)]
    title = stable_title(parts.title)
    return [ControlRef(f"{parts.first}: {title}" if parts.first else title, None, hipaa, level)]


def worst(statuses: list[str]) -> str:
    """error > drift > pass > not applicable."""
    return min(statuses, key=STATUSES.index) if statuses else "not applicable"


def ids_named_in(text: str) -> set[str]:
    """Control ids a message names, e.g. ``SKIPPED ... (1.5.1, KRNL-6000): ...``."""
    return set(_ID_IN_TEXT.findall(text))


def note_applies(note_field: str | None, named: set[str], control_id: str) -> bool:
    """Whether a role's SKIPPED message is about this control.

    It is when the message names the control, or when the name's first field
    is the control's id or a prefix of it (``1.1.1`` for 1.1.1.x, ``1.5.x``).
    """
    if control_id in named:
        return True
    if not note_field:
        return False
    if note_field.endswith(".x"):
        return control_id.startswith(note_field[:-1])
    return control_id == note_field or control_id.startswith(note_field + ".")


@dataclass
class RoleTask:
    """A task of a role's tasks file that serves a control (for tests/audit)."""

    role: str
    file: str
    name: str
    controls: list[ControlRef] = field(default_factory=list)


def walk_tasks(tasks: list[dict] | None, inherited: tuple[str, ...] = ()):
    """Every task of a tasks file, with the tags it inherits from its blocks."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        tags = task.get("tags", [])
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        own = inherited + tuple(str(t) for t in tags)
        if "block" in task:
            for key in ("block", "rescue", "always"):
                yield from walk_tasks(task.get(key), own)
        else:
            yield task, own
