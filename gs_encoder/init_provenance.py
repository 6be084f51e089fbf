"""Provenance of learned-init weights: the training log that goes with a weights file, and the check that a
shipped file's history (each stage's weights by SHA-256, and the weights it started from) holds together.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fitting.learned_init import file_sha256

__all__ = ["check_provenance", "log_path", "source_log"]


def log_path(weights: Path) -> Path:
    """The training log that goes with a weights file: learned_init.safetensors -> learned_init_log.json."""
    return weights.with_name(weights.name.split(".")[0] + "_log.json")


def source_log(weights: Path) -> dict:
    """{"log": the training log of `weights`} if it has one beside it (else {"log": None})."""
    for candidate in (log_path(weights), weights.with_name("train_log.json")):
        try:
            return {"log": json.loads(candidate.read_text())}
        except (OSError, ValueError):
            continue
    return {"log": None}


def check_provenance(weights: Path) -> list[str]:
    """Walk the training log of a weights file back through every stage it was fine-tuned from: the file's
    SHA-256 must be the one its log wrote, and each stage must have started from the weights (by SHA-256)
    that the stage before it wrote. Returns the hashes from the file back to the first stage; raises
    ValueError naming the first break."""
    weights = Path(weights)
    log = source_log(weights)["log"]
    if log is None:
        raise ValueError(f"{weights}: no training log beside it ({log_path(weights).name})")
    have = file_sha256(weights)
    if log.get("weights_sha256") != have:
        raise ValueError(
            f"{weights}: its SHA-256 {have[:12]} is not the one its log wrote ({str(log.get('weights_sha256'))[:12]})"
        )
    chain = [have]
    while "started_from" in log:
        start = log["started_from"]
        parent = start.get("log")
        if parent is None or "sha256" not in start:
            raise ValueError(
                f"{weights}: stage {len(chain)} started from {start.get('weights')} without its log or hash"
            )
        if parent.get("weights_sha256") != start["sha256"]:
            raise ValueError(
                f"{weights}: stage {len(chain)} started from weights {start['sha256'][:12]}, but the log it keeps "
                f"wrote {str(parent.get('weights_sha256'))[:12]}"
            )
        chain.append(start["sha256"])
        log = parent
    return chain
