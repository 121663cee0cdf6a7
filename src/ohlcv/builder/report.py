"""The build report: every cleaning rule's counts per symbol, quarantines, notes and throughput."""

from __future__ import annotations

import time

from ohlcv.builder.clean import RULES


def off_session_notes(reports: list[dict], venues: dict) -> list[str]:
    """A line for each built symbol with 1% or more of its bars outside its sessions (a quarantined one
    says so in its reason): a time zone or calendar slightly off shows up here."""
    notes = []
    for report in reports:
        off, rows = report["counts"].get("off_session", 0), max(report["rows_read"], 1)
        if report["quarantined"] or off < 0.01 * rows:
            continue
        venue = venues.get(report["item_id"].split("/", 1)[0])
        notes.append(f"{report['item_id']}: {off} of {rows} bars ({off / rows:.1%}) fall outside the "
                     f"{venue.describe() if venue else 'venue'} sessions and were dropped; check data.calendars "
                     "and the lake's time zone")
    return notes


def missing_variate_notes(reports: list[dict], owners: dict[str, str]) -> list[str]:
    """A line for each set of variates that some built symbols have no value of at all: uni2ts sees them
    missing throughout for those series. ``owners`` maps a feature's outputs to the feature."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for report in reports:
        if not report["quarantined"] and report.get("missing_variates"):
            groups.setdefault(tuple(report["missing_variates"]), []).append(report["item_id"])
    built = sum(1 for r in reports if not r["quarantined"])
    notes = []
    for variates, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        features = sorted({owners[v] for v in variates if v in owners})
        shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
        notes.append(f"{', '.join(variates)}{' (' + ', '.join(features) + ')' if features else ''}: no value at all in "
                     f"{len(items)} of {built} series ({shown}): a warm-up longer than the series, a cross-asset "
                     "feature without peers, or a fitted one with too few training bars")
    return notes


def build_report(reports: list[dict], skipped: list[str], started: float, resumed: int, batches: int) -> dict:
    totals: dict[str, int] = {}
    for report in reports:
        for rule, count in report["counts"].items():
            totals[rule] = totals.get(rule, 0) + count
    seconds = time.perf_counter() - started
    rows = sum(r["rows_read"] for r in reports)
    return {
        "symbols": len(reports),
        "built": sum(1 for r in reports if not r["quarantined"]),
        "quarantined": [{"item_id": r["item_id"], "reason": r["quarantined"]} for r in reports if r["quarantined"]],
        "totals": dict(sorted(totals.items())),
        "rules": {rule: {"outcome": outcome, "meaning": meaning} for rule, (outcome, meaning) in RULES.items()},
        "per_symbol": {r["item_id"]: r for r in reports},
        "skipped_paths": skipped,
        "batches": batches,
        "resumed_batches": resumed,
        "rows_read": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
