"""The audit report: built from the callback's records, written as JSON and HTML.

Pure Python (no Ansible import), so tests use it directly. The schema is
documented in the collection's README ("The report").
"""

from __future__ import annotations

import difflib
import hashlib
import html
import json
import os
import re
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ansible_collections.clinchat.appliance.plugins.plugin_utils import controls as ctl

SCHEMA = "clinchat-audit-report"
SCHEMA_VERSION = 1
JSON_NAME = "report.json"
HTML_NAME = "report.html"
DIFF_MAX_LINES = 120
TEXT_MAX_CHARS = 4000
# The project's root when the collection is the one in this repository.
_PROJECT_ROOT = Path(__file__).resolve().parents[6]

HIPAA_TITLES = {
    "164.312.a.1": ("164.312(a)(1)", "Access control"),
    "164.312.a.2.i": ("164.312(a)(2)(i)", "Unique user identification"),
    "164.312.a.2.ii": ("164.312(a)(2)(ii)", "Emergency access procedure"),
    "164.312.a.2.iii": ("164.312(a)(2)(iii)", "Automatic logoff"),
    "164.312.a.2.iv": ("164.312(a)(2)(iv)", "Encryption and decryption"),
    "164.312.b": ("164.312(b)", "Audit controls"),
    "164.312.c.1": ("164.312(c)(1)", "Integrity"),
    "164.312.c.2": ("164.312(c)(2)", "Mechanism to authenticate ePHI"),
    "164.312.d": ("164.312(d)", "Person or entity authentication"),
    "164.312.e.1": ("164.312(e)(1)", "Transmission security"),
    "164.312.e.2.i": ("164.312(e)(2)(i)", "Integrity controls"),
    "164.312.e.2.ii": ("164.312(e)(2)(ii)", "Encryption"),
}


# -- what a task result says --------------------------------------------------------------


def _trim(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    return (
        text
        if len(text) <= limit
        else text[:limit] + f"\n... ({len(text) - limit} more characters)"
    )


def message_of(result: dict[str, Any], failed: bool = False) -> str:
    """The task's message; a failed command's stderr; failed loop items' messages."""
    parts: list[str] = []
    msg = result.get("msg")
    if isinstance(msg, list):
        msg = "\n".join(str(m) for m in msg)
    if msg and msg != "All items completed":
        parts.append(str(msg))
    if failed and result.get("stderr"):
        parts.append(str(result["stderr"]).strip())
    for item in result.get("results") or []:
        if isinstance(item, dict) and item.get("failed") and item.get("msg"):
            parts.append(f"{item.get('item', '')}: {item['msg']}")
    return _trim("\n".join(parts))


def _one_diff(diff: dict[str, Any]) -> str:
    if "prepared" in diff:
        return str(diff["prepared"])
    if "before" not in diff and "after" not in diff:
        return ""

    def lines(value: Any) -> list[str]:
        if not isinstance(value, str):
            value = json.dumps(value, indent=1, sort_keys=True, default=str)
        return value.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(
            lines(diff.get("before", "")),
            lines(diff.get("after", "")),
            fromfile=f"before: {diff.get('before_header', '')}".strip(),
            tofile=f"after: {diff.get('after_header', '')}".strip(),
        )
    )


def diff_text(result: dict[str, Any]) -> str:
    """The --diff output of a task (and of its loop items), trimmed."""
    diffs: list[Any] = []
    for source in [result, *(r for r in result.get("results") or [] if isinstance(r, dict))]:
        found = source.get("diff")
        diffs.extend(found if isinstance(found, list) else [found] if found else [])
    text = "".join(_one_diff(d) for d in diffs if isinstance(d, dict))
    lines = text.splitlines()
    if len(lines) > DIFF_MAX_LINES:
        text = (
            "\n".join(lines[:DIFF_MAX_LINES]) + f"\n... ({len(lines) - DIFF_MAX_LINES} more lines)"
        )
    return _trim(text, TEXT_MAX_CHARS * 2)


# -- what the report names ------------------------------------------------------------------


def project_version() -> str:
    pyproject = _PROJECT_ROOT / "pyproject.toml"
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    try:
        return metadata.version("clinchat-appliance")
    except metadata.PackageNotFoundError:
        return "unknown"


def bundle_info(bundle_dir: str, url: str | None = None) -> dict[str, Any]:
    """The bundle, by its manifest (roles/bundle writes manifest.json)."""
    info: dict[str, Any] = {"dir": bundle_dir, "url": url}
    manifest = Path(bundle_dir) / "manifest.json"
    try:
        raw = manifest.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        info["error"] = f"no readable manifest.json: {exc}"
        return info
    python = data.get("python") or {}
    debian = data.get("debian") or {}
    info.update(
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        format=data.get("format"),
        project_version=python.get("project_version"),
        project_wheel=python.get("project_wheel"),
        debian_suite=debian.get("suite"),
        debs=debian.get("debs"),
        wheels=python.get("wheels"),
        signing_key=debian.get("signing_key"),
    )
    if not url:
        info["url"] = data.get("url")
    return info


def output_dir(playbook: str = "") -> Path:  # noqa: ARG001 - kept for a per-playbook default later
    configured = os.environ.get("CLINCHAT_AUDIT_DIR")
    if configured:
        return Path(configured)
    root = _PROJECT_ROOT if (_PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return root / "artifacts" / "audit"


# -- building --------------------------------------------------------------------------------


def _natural(key: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key)]


def _counts(statuses: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(ctl.STATUSES, 0)
    for status in statuses:
        counts[status] += 1
    counts["total"] = sum(counts.values())
    return counts


def _host_controls(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    controls: dict[str, dict[str, Any]] = {}
    notes = [r for r in records if r["note"]]
    for record in records:
        for ref in record["controls"]:
            control = controls.setdefault(
                ref.id,
                {"id": ref.id, "cis": ref.cis, "hipaa": [], "level": ref.level, "title": "",
                 "roles": [], "status": "", "reason": None, "tasks": []},
            )  # fmt: skip
            control["hipaa"] = sorted(set(control["hipaa"]) | set(ref.hipaa))
            control["level"] = control["level"] or ref.level
            if record["role"] and record["role"] not in control["roles"]:
                control["roles"].append(record["role"])
            # The title: a PATCH task's, else an "Ensure ..." check's, else the first task's.
            parts = ctl.split_name(record["name"])
            rank = 2 if parts.kind == "PATCH" else 1 if parts.title.startswith("Ensure") else 0
            if rank > control.get("_rank", -1):
                control["title"], control["_rank"] = parts.title, rank
            control["tasks"].append(
                {
                    key: record[key]
                    for key in ("name", "role", "status", "reason", "msg", "diff", "evidence")
                }
            )
    used: set[int] = set()
    for control in controls.values():
        control.pop("_rank", None)
        control["status"] = ctl.worst([t["status"] for t in control["tasks"]])
        applying = [
            i for i, n in enumerate(notes)
            if any(ref.id == control["id"] for ref in n["controls"])
            or ctl.note_applies(n["id_field"], ctl.ids_named_in(n["msg"]), control["id"])
        ]  # fmt: skip
        used.update(applying)
        if control["status"] == "pass" and applying:
            control["status"] = "not applicable"
        if control["status"] == "not applicable":
            reasons = [notes[i]["msg"] for i in applying] or [
                t["reason"] for t in control["tasks"] if t["reason"]
            ]
            control["reason"] = reasons[0] if reasons else "skipped"
    host_notes = [n["msg"] for i, n in enumerate(notes) if i not in used and not n["controls"]]
    ordered = sorted(controls.values(), key=lambda c: _natural(c["id"]))
    return ordered, list(dict.fromkeys(host_notes))


def build(
    records: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    run: dict[str, Any],
    version: str,
    bundle: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report document (schema clinchat-audit-report, version 1)."""
    hosts: dict[str, Any] = {}
    by_spec: dict[str, list[str]] = {}
    for host in dict.fromkeys(r["host"] for r in [*records, *failures]):
        controls, notes = _host_controls([r for r in records if r["host"] == host])
        failed = [{"task": f["task"], "msg": f["msg"]} for f in failures if f["host"] == host]
        hosts[host] = {
            "summary": {**_counts(c["status"] for c in controls), "failures": len(failed)},
            "notes": notes,
            "failures": failed,
            "controls": controls,
        }
        for control in controls:
            for spec in control["hipaa"]:
                by_spec.setdefault(spec, []).append(control["status"])
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "project": {"name": "clinchat-appliance", "version": version},
        "bundle": bundle,
        "run": run,
        "summary": {
            "total": {
                **_counts(c["status"] for h in hosts.values() for c in h["controls"]),
                "failures": sum(len(h["failures"]) for h in hosts.values()),
            },
            "hosts": {name: h["summary"] for name, h in hosts.items()},
            "hipaa": {
                spec: {
                    "citation": HIPAA_TITLES.get(spec, (spec, ""))[0],
                    "title": HIPAA_TITLES.get(spec, (spec, ""))[1],
                    **_counts(statuses),
                }
                for spec, statuses in sorted(by_spec.items(), key=lambda kv: _natural(kv[0]))
            },
        },
        "hosts": hosts,
    }


# -- writing ---------------------------------------------------------------------------------


def write(document: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """report.json and report.html (which carries the JSON's SHA-256) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    digest = hashlib.sha256(data).hexdigest()
    paths: dict[str, Any] = {
        "json": out_dir / JSON_NAME,
        "html": out_dir / HTML_NAME,
        "sha256": digest,
    }
    for path, content in (
        (paths["json"], data),
        (paths["html"], render_html(document, digest).encode()),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    return paths


def console_summary(document: dict[str, Any], paths: dict[str, Any]) -> list[str]:
    total = document["summary"]["total"]
    lines = [
        "CLINCHAT AUDIT: {} hosts, {} controls: {} pass, {} drift, {} not applicable, {} error;"
        " {} failed tasks outside controls".format(
            len(document["hosts"]), total["total"], total["pass"], total["drift"],
            total["not applicable"], total["error"], total["failures"],
        ),
    ]  # fmt: skip
    width = max((len(h) for h in document["hosts"]), default=4)
    for name, host in document["hosts"].items():
        s = host["summary"]
        bad = [
            f"{c['id']} ({c['status']})"
            for c in host["controls"]
            if c["status"] in ("drift", "error")
        ]
        bad += [f"failed: {f['task']}" for f in host["failures"]]
        line = (
            f"  {name:<{width}}  pass {s['pass']:>3}  drift {s['drift']:>3}"
            f"  n/a {s['not applicable']:>3}  error {s['error']:>3}"
        )
        if bad:
            shown = ", ".join(bad[:8]) + (f", ... ({len(bad) - 8} more)" if len(bad) > 8 else "")
            line += f"   {shown}"
        lines.append(line)
    lines.append(f"  report: {paths['json']} (sha256 {paths['sha256']})")
    lines.append(f"          {paths['html']}")
    return lines


# -- the HTML page: self-contained, everything from hosts escaped ------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f0f0f0}
#controls th{cursor:pointer;user-select:none}#controls th:after{content:" \\2195";color:#999}
.meta td:first-child{font-weight:600}.num{text-align:right}
.s-pass{background:#e6f4ea}.s-drift{background:#fde8c8}.s-error{background:#fbd5d5}
.s-na{background:#eef1f5;color:#444}
pre{white-space:pre-wrap;margin:.3em 0;max-width:70em;font-size:12px;background:#fafafa;
border:1px solid #eee;padding:.3em}code{font-size:12px}
.filters label{margin-right:1em}summary{cursor:pointer;color:#0645ad}
"""

_JS = """
(function(){
  var table=document.getElementById('controls'),body=table.tBodies[0];
  var boxes=document.querySelectorAll('.filters input[type=checkbox]');
  var search=document.getElementById('search');
  function apply(){
    var on={},q=search.value.toLowerCase();
    boxes.forEach(function(b){on[b.value]=b.checked;});
    Array.prototype.forEach.call(body.rows,function(r){
      var show=on[r.dataset.status]&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
      r.style.display=show?'':'none';
    });
  }
  boxes.forEach(function(b){b.addEventListener('change',apply);});
  search.addEventListener('input',apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.key||a.cells[i].textContent;
        var y=b.cells[i].dataset.key||b.cells[i].textContent;
        return (asc?1:-1)*x.localeCompare(y,undefined,{numeric:true});
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
"""

_STATUS_CLASS = {"pass": "s-pass", "drift": "s-drift", "error": "s-error", "not applicable": "s-na"}
_RANK = {s: str(i) for i, s in enumerate(ctl.STATUSES)}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _counts_row(label: str, counts: dict[str, int]) -> str:
    cells = "".join(
        f'<td class="num {_STATUS_CLASS[s] if counts[s] else ""}">{counts[s]}</td>'
        for s in ctl.STATUSES
    )
    return f"<tr><td>{label}</td>{cells}<td class=num>{counts['total']}</td></tr>"


def _evidence(control: dict[str, Any]) -> str:
    parts = []
    if control.get("reason"):
        parts.append(f"<p><b>Reason:</b> {_e(control['reason'])}</p>")
    for task in control["tasks"]:
        parts.append(
            f"<p><b>{_e(task['name'])}</b> ({_e(task['role'] or '-')}): {_e(task['status'])}</p>"
        )
        if task.get("evidence"):
            ev = {
                k: json.dumps(v, ensure_ascii=False, default=str)
                for k, v in task["evidence"].items()
            }
            parts.append(
                "<table><tr><th>observed</th><th>comparison</th><th>expected</th></tr><tr>"
                + "".join(
                    f"<td><code>{_e(ev.get(k))}</code></td>"
                    for k in ("observed", "comparison", "expected")
                )
                + "</tr></table>"
            )
        if task.get("msg"):
            parts.append(f"<pre>{_e(task['msg'])}</pre>")
        if task.get("reason") and task["reason"] != task.get("msg"):
            parts.append(f"<pre>{_e(task['reason'])}</pre>")
        if task.get("diff"):
            parts.append(f"<pre>{_e(task['diff'])}</pre>")
    return "".join(parts)


def render_html(document: dict[str, Any], json_sha256: str) -> str:
    run, bundle, summary = document["run"], document.get("bundle") or {}, document["summary"]
    heads = "".join(f"<th>{_e(s)}</th>" for s in ctl.STATUSES)
    bundle_text = (
        f"{bundle.get('dir')} (project {bundle.get('project_version')}, manifest sha256 "
        f"{bundle.get('manifest_sha256')})" if bundle.get("manifest_sha256")
        else f"{bundle.get('dir')}: {bundle.get('error')}" if bundle
        else "not named by the inventory"
    )  # fmt: skip
    meta = [
        ("Project", f"clinchat-appliance {document['project']['version']}"),
        ("Bundle", bundle_text),
        ("Inventory", ", ".join(run.get("inventory") or [])),
        ("Playbook", run.get("playbook")),
        ("Check mode / diff", f"{run.get('check_mode')} / {run.get('diff_mode')}"),
        ("Started / finished", f"{run.get('started')} / {run.get('finished')}"),
        (f"SHA-256 of {JSON_NAME}", json_sha256),
    ]
    rows = []
    for host_name, host in document["hosts"].items():
        for c in host["controls"]:
            status = c["status"]
            hipaa = ", ".join(HIPAA_TITLES.get(s, (s, ""))[0] for s in c["hipaa"])
            rows.append(
                f'<tr data-status="{_e(status)}"><td>{_e(host_name)}</td>'
                f'<td data-key="{_e(c["id"])}">{_e(c["id"])}</td><td>{_e(c["cis"] or "")}</td>'
                f"<td>{_e(hipaa)}</td><td>{_e(c['level'] or '')}</td>"
                f"<td>{_e(', '.join(c['roles']))}</td><td>{_e(c['title'])}</td>"
                f'<td class="{_STATUS_CLASS[status]}" data-key="{_RANK[status]}">{_e(status)}</td>'
                f"<td><details><summary>{len(c['tasks'])} task(s)</summary>"
                f"{_evidence(c)}</details></td></tr>"
            )
    notes = "".join(
        f"<li><b>{_e(h)}</b>: {_e(n)}</li>"
        for h, host in document["hosts"].items()
        for n in host["notes"]
    )
    failures = "".join(
        f"<li><b>{_e(h)}</b>: {_e(f['task'])}<pre>{_e(f['msg'])}</pre></li>"
        for h, host in document["hosts"].items()
        for f in host["failures"]
    )
    filters = "".join(
        f'<label><input type="checkbox" value="{_e(s)}" checked> {_e(s)}</label>'
        for s in ctl.STATUSES
    )
    meta_rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in meta)
    host_rows = "".join(_counts_row(_e(h), c) for h, c in summary["hosts"].items())
    spec_rows = "".join(
        _counts_row(_e(f"{v['citation']} {v['title']}"), v) for v in summary["hipaa"].values()
    )
    failed = "Failed tasks outside any control"
    # Nothing is loaded from anywhere: the page opens offline, and says so to the browser.
    policy = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<title>ClinChat audit report</title><style>{_CSS}</style></head><body>
<h1>ClinChat audit report</h1>
<table class="meta">{meta_rows}</table>
<h2>Per host</h2>
<table><tr><th>host</th>{heads}<th>total</th></tr>
{host_rows}
{_counts_row("<b>all hosts</b>", summary["total"])}</table>
<h2>Per HIPAA specification (45 CFR 164.312), controls on all hosts</h2>
<table><tr><th>specification</th>{heads}<th>total</th></tr>
{spec_rows}</table>
{f'<h2 class="s-error">{failed}</h2><ul>{failures}</ul>' if failures else ""}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Controls</h2>
<div class="filters">{filters}
<input id="search" type="search" placeholder="filter: host, id, title ..."></div>
<table id="controls"><thead><tr><th>host</th><th>control</th><th>CIS</th><th>HIPAA 164.312</th>
<th>level</th><th>role</th><th>title</th><th>status</th><th>evidence</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<script>{_JS}</script>
</body></html>
"""
