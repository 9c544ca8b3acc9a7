"""A terminal progress bar over jobs being polled: items finished (done + failed) of the total."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from tqdm import tqdm


class JobsProgressBar:
    """Pass as ``on_poll`` to :meth:`ApiClient.wait_for_jobs`; use as a context manager."""

    def __init__(self, total: int, desc: str = "ingest", file: IO[str] | None = None) -> None:
        self.bar = tqdm(
            total=total, unit="img", desc=desc, file=file or sys.stderr, mininterval=0.5
        )

    def __enter__(self) -> JobsProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.close()

    def __call__(self, docs: Sequence[dict[str, Any]]) -> None:
        # A job's total is known from its first document; the bar's may grow as jobs are seen.
        total = sum(doc.get("total") or 0 for doc in docs)
        if total > (self.bar.total or 0):
            self.bar.total = total
        finished = sum((doc.get("done") or 0) + (doc.get("failed") or 0) for doc in docs)
        failed = sum(doc.get("failed") or 0 for doc in docs)
        statuses = sorted({str(doc.get("status")) for doc in docs})
        self.bar.set_postfix(status=",".join(statuses), failed=failed, refresh=False)
        self.bar.update(max(0, finished - self.bar.n))
