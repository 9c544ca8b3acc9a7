"""Every PostgreSQL advisory lock the project takes, named in one place.

PostgreSQL keeps advisory locks in two key spaces that never conflict with each other: one
``bigint`` key (``pg_advisory_lock(key)``) and a pair of ``int4`` keys
(``pg_advisory_lock(a, b)``); ``pg_locks`` tells them apart by ``objsubid`` (1 and 2). The two
locks below share one number ("visr") and stay apart only because each uses a different form:
a new lock must take a number of its own (or a new first key of the pair form), never reuse one
of these in the same form.

The values are part of the deployed contract: during a rolling upgrade old and new processes
must take the same lock, so never change one.
"""

from __future__ import annotations

# One fold of the neighbour lists (and one cache reload) at a time across every worker:
# ``pg_advisory_lock(FOLD_LOCK_KEY)``, the single-``bigint`` form, held on its own connection
# (workers/search/fold.py).
FOLD_LOCK_KEY = 0x76697372

# The sender of a job's start task and the worker that runs it:
# ``pg_advisory_xact_lock(JOB_DISPATCH_LOCK_SPACE, hashtext(job_id))``, the two-``int4`` form, one
# lock per job, held until the transaction ends (shared/ingest_state.py).
JOB_DISPATCH_LOCK_SPACE = 0x76697372
