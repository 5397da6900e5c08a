"""Exporting the audit trail: CSV for spreadsheets, JSON lines for programs, streamed in constant memory.

An export first records itself (``audit_exported``: who, which format, which filters) and then
streams the matching events up to and including that record, page by page, in its own read
session: a million events are never in memory at once, and what the file covers is fixed when it
starts. CSV is UTF-8 with a byte-order mark, so Excel opens Chinese text correctly; cells that
begin like a formula are prefixed with an apostrophe (sign-in failures record whatever name was
typed). JSON lines carry every field the hash covers, so each line can be re-hashed on its own.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from engine import audit
from engine.audit_query import AuditFilter, EventView, Names, Scope, conditions
from engine.db import Database

BEIJING = timezone(timedelta(hours=8))
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
CSV_COLUMNS = ("seq", "at", "actor", "action", "org", "process", "instance", "payload", "prev_hash", "hash")
BOM = "\ufeff"
BATCH = 2000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def record(s: Session, actor: str, fmt: str, f: AuditFilter, scope: Scope) -> int:
    """Audit the export about to be streamed; return its own seq, the last one the file covers."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    payload = {
        "format": fmt,
        "filters": f.as_payload(),
        "scope": "all" if scope.org_ids is None else sorted(scope.org_ids),
    }
    (row,) = audit.append(s, [audit.PendingEvent(actor=actor, action="audit_exported", payload=payload)])
    return row.seq


def stream(
    db: Database,
    fmt: str,
    f: AuditFilter,
    scope: Scope,
    upto: int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The export's text in chunks (one per page of events), for a streamed response or a file.

    ``progress`` is told how many events each chunk holds (the CLI reports the total).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    with db.read() as s:
        where = conditions(s, f, scope)
        names = Names(s)
        if fmt == "csv":
            yield BOM + _csv_lines([CSV_COLUMNS])
        for rows in audit.iter_pages(s, upto=upto, where=where, batch=BATCH):
            views = names.resolve(rows, people=False)
            if progress is not None:
                progress(len(views))
            if fmt == "csv":
                yield _csv_lines(_csv_row(v) for v in views)
            else:
                yield "".join(json.dumps(_json_row(v), ensure_ascii=False) + "\n" for v in views)


def beijing_iso(view: EventView) -> str:
    return view.at.astimezone(BEIJING).isoformat(timespec="microseconds")


def _csv_lines(rows: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _csv_row(v: EventView) -> list[Any]:
    return [
        v.seq,
        beijing_iso(v),
        _cell(v.actor),
        _cell(v.action),
        _cell(v.org_code or ""),
        _cell(v.process or ""),
        "" if v.instance_id is None else v.instance_id,
        json.dumps(v.payload, ensure_ascii=False, sort_keys=True),
        v.prev_hash,
        v.hash,
    ]


def _cell(text: str) -> str:
    """Text a spreadsheet would run as a formula is shown as text instead (CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _json_row(v: EventView) -> dict[str, Any]:
    return {
        "seq": v.seq,
        "at": beijing_iso(v),
        "actor": v.actor,
        "action": v.action,
        "org": v.org_code,
        "process": v.process,
        "instance": v.instance_id,
        "payload": v.payload,
        "prev_hash": v.prev_hash,
        "hash": v.hash,
        "org_id": v.org_id,
        "definition_id": v.definition_id,
        "task_guid": v.task_guid,
    }


def rehash(line: dict[str, Any]) -> str:
    """Recompute an exported JSON line's hash: anyone holding the file can check a line on its own."""
    event = SimpleNamespace(
        seq=line["seq"],
        at=datetime.fromisoformat(line["at"]).astimezone(UTC),
        actor=line["actor"],
        action=line["action"],
        instance_id=line["instance"],
        task_guid=line["task_guid"],
        definition_id=line["definition_id"],
        org_id=line["org_id"],
        payload=line["payload"],
        prev_hash=line["prev_hash"],
    )
    return audit.compute_hash(event)
