"""The example layouts (examples 10 to 13) as the unit and e2e tests run them: the example, the generator's
layout and its size, and how the Hugging Face example is pointed at its CSV or Parquet table."""

from __future__ import annotations

from typing import Any

CASES: dict[str, tuple[str, str, dict[str, Any]]] = {  # name -> (example, layout, size)
    "imagefolder": ("10-imagefolder.yaml", "imagefolder", {"classes": 5, "train_per_class": 6, "val_per_class": 2}),
    "audio-csv": ("11-audio-csv.yaml", "audio-csv", {"clips": 24}),
    "coco": ("12-coco.yaml", "coco", {"images": 14}),
    "hf-metadata": ("13-hf-metadata.yaml", "hf-metadata", {"images": 16, "table": "jsonl"}),
    "hf-csv": ("13-hf-metadata.yaml", "hf-metadata", {"images": 16, "table": "csv"}),
    "hf-parquet": ("13-hf-metadata.yaml", "hf-metadata", {"images": 16, "table": "parquet"}),
}


def point_at_table(spec: dict[str, Any], size: dict[str, Any]) -> None:
    """Example 13 reads metadata.jsonl; its CSV and Parquet variants read their own table (CSV: no list column,
    and the score as written, since CSV has no types)."""
    if size.get("table") in ("csv", "parquet"):
        table = spec["samples"]["tables"][0]
        table["path"] = f"images/metadata.{size['table']}"
        if size["table"] == "csv":
            table["json"]["columns"] = ["score"]
