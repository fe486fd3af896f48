"""Write evaluation results as JSON (everything) and CSV (answers, judgments, summaries)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)  # readers never see half a file
    return path


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_csv(result: dict[str, Any], prefix: str | Path) -> list[Path]:
    """prefix.answers.csv, prefix.judgments.csv, prefix.pairs.csv, prefix.grades.csv,
    prefix.metrics.csv: each written when the result holds that part."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {
        "answers": [
            {"candidate": c, "item_id": i, **a}
            for c, by in result.get("answers", {}).items()
            for i, a in by.items()
        ],
        "judgments": [
            {
                **{
                    k: j[k]
                    for k in (
                        "item_id",
                        "category",
                        "a",
                        "b",
                        "outcome",
                        "inconsistent",
                        "prompt_version",
                    )
                },
                "verdict_ab": j["ab"]["value"],
                "status_ab": j["ab"]["status"],
                "verdict_ba": j["ba"]["value"],
                "status_ba": j["ba"]["status"],
                # Constrained local judges: how sure each order was, and the
                # position-calibrated outcome (empty for free-text judges).
                "confidence_ab": j["ab"].get("confidence"),
                "confidence_ba": j["ba"].get("confidence"),
                "calibrated": j.get("calibrated"),
            }
            for j in result.get("judgments", [])
        ],
        "pairs": result.get("pairs", []),
        "grades": [
            {
                k: g[k]
                for k in ("item_id", "category", "candidate", "rating", "status", "prompt_version")
            }
            for g in result.get("grades", [])
        ],
        "metrics": [
            {
                "candidate": c,
                "metric": m,
                **{k: v for k, v in s.items() if k in ("value", "low", "high", "n")},
            }
            for c, ms in result.get("metrics", {}).items()
            for m, s in ms.items()
        ],
    }
    written = []
    for name, rows in tables.items():
        if rows:
            path = prefix.parent / f"{prefix.name}.{name}.csv"
            _write_rows(path, rows)
            written.append(path)
    return written
