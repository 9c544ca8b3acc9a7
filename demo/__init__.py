"""``make demo``: the whole product on this machine, from a fresh clone, in one command.

Phases (each printed with its time): database, sample catalogue, model bundle, stack (web +
worker from the Procfile, under honcho), ingestion through the HTTP API, recommendations with
precision@5 against the catalogue's labels (and as a share of the best reachable), the
detector's hits and misses against the same labels, then the UI until Ctrl-C (or exit with
DEMO_ONCE=1).
"""
