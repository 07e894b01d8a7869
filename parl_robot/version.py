"""Which code produced a result: the git commit of the checkout, marked when it had local changes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Outputs a run writes into the checkout; they do not change the code that produced it.
RESULT_PATHS = (":(exclude)benchmarks/results",)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30).stdout


def code_version() -> str:
    """'git:<commit>' for a clean checkout, 'git:<commit>+dirty.<hash of the diff>' with uncommitted
    changes to tracked files (two different edits give two versions), 'unknown' outside a checkout."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        diff = _git("diff", "HEAD", "--", ".", *RESULT_PATHS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff:
        return f"git:{commit}"
    return f"git:{commit}+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:8]}"
