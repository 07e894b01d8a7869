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
    """'git:<commit>' for a clean checkout, 'git:<commit>+dirty.<hash>' with uncommitted changes to
    tracked files or new files git does not ignore (the hash covers the diff and the new files'
    contents: two different edits give two versions), 'unknown' outside a checkout."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        diff = _git("diff", "HEAD", "--", ".", *RESULT_PATHS)
        untracked = _git("ls-files", "--others", "--exclude-standard", "--", ".", *RESULT_PATHS).split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff and not untracked:
        return f"git:{commit}"
    digest = hashlib.sha256(diff.encode())
    for name in sorted(untracked):
        digest.update(name.encode())
        path = REPO_ROOT / name
        if path.is_file():
            digest.update(path.read_bytes())
    return f"git:{commit}+dirty.{digest.hexdigest()[:8]}"
