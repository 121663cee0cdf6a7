"""The build report: every cleaning rule's counts per symbol, quarantines, notes and throughput."""

from __future__ import annotations

import time
from typing import Any

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


def variate_causes(feature_specs) -> dict[str, dict[str, Any]]:
    """Why each variate could have no value at all in a series: the lake's volume, or the feature that
    makes it (a cross-asset one needs peers, a fitted one training bars, any its own warm-up). Kept in
    the report, so that ``build merge`` words its notes as a build does."""
    causes: dict[str, dict[str, Any]] = {"volume": {"feature": None, "cause": "no volume in its files"}}
    for feature, params in feature_specs:
        for name, warmup in feature.output_warmups(params).items():
            if feature.reference is not None:
                cause = "no other symbol of its asset class at its bars"
            elif feature.fit is not None:
                cause = "too few training bars to fit it"
            else:
                cause = f"a warm-up of {warmup} bars, longer than the series"
            causes[name] = {"feature": feature.name, "cause": cause, "cross_asset": feature.reference is not None,
                            "inputs": list(feature.inputs)}
    return causes


def missing_variate_notes(reports: list[dict], causes: dict[str, dict[str, Any]],
                          peerless_classes: set[str] = frozenset()) -> list[str]:
    """A line for each set of variates that some built symbols have no value of at all (uni2ts sees them
    missing throughout for those series), with the features and likely causes. The cross-asset features
    of a class of one symbol are left out: their own note says so."""
    groups: dict[tuple[str, ...], list[str]] = {}
    built = 0
    for report in reports:
        if report["quarantined"]:
            continue
        built += 1
        alone = report["item_id"].split("/", 1)[0] in peerless_classes
        missing = tuple(v for v in report.get("missing_variates", [])
                        if not (alone and causes.get(v, {}).get("cross_asset")))
        if missing:
            groups.setdefault(missing, []).append(report["item_id"])
    notes = []
    for variates, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        why = []
        for variate in variates:
            known = causes.get(variate)
            if "volume" in variates and "volume" in (known or {}).get("inputs", []):
                continue  # a feature of volume, in a series without volume: said once, for volume
            if known is not None:
                text = f"{known['feature']}: {known['cause']}" if known["feature"] else known["cause"]
                if text not in why:
                    why.append(text)
        shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
        notes.append(f"{', '.join(variates)}: no value at all in {len(items)} of {built} series ({shown})"
                     + (f"; likely {'; '.join(why)}" if why else ""))
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
