"""Google Cloud's textual units as Terraform writes them: `"600s"` durations, Cloud Run
`cpu = "1000m"` and `memory = "512Mi"`, Pub/Sub and BigQuery resource names."""

from __future__ import annotations

import re

_MEMORY = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def seconds(text: str | int | float) -> float:
    """Google's duration strings ('600s', '3.5s'), or a bare number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(text))
    if not m:
        raise ValueError(f"expected a duration such as \"600s\", got {text!r}")
    return float(m.group(1))


def cpu(text: str | int | float) -> float:
    """'1', '2', '1000m' -> vCPUs."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)(m?)\s*", str(text))
    if not m:
        raise ValueError(f"expected a CPU limit such as \"1\" or \"1000m\", got {text!r}")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def memory_gib(text: str | int) -> float:
    """'512Mi', '1Gi', '256M' -> GiB."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([kKMGT]i?|)\s*", str(text))
    if not m or m.group(2) not in _MEMORY:
        raise ValueError(f"expected a memory size such as \"512Mi\" or \"1Gi\", got {text!r}")
    return round(float(m.group(1)) * _MEMORY[m.group(2)] / 2**30, 4)


def last_segment(name: str, collection: str) -> str:
    """'projects/p/topics/orders' -> 'orders'; a bare name stays as it is."""
    m = re.fullmatch(rf"(?:.*/)?{collection}/([^/]+)", name)
    return m.group(1) if m else name


def bigquery_table(ref: str) -> str:
    """'project.dataset.table', 'project:dataset.table' or 'dataset.table' -> 'dataset.table'."""
    parts = ref.replace(":", ".").split(".")
    if len(parts) < 2:
        raise ValueError(f"expected project.dataset.table, got {ref!r}")
    return ".".join(parts[-2:])
