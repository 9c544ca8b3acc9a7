"""Task names: the contract between the web tier (which sends by name) and the workers."""

START_JOB = "workers.ingest.start_job"
INGEST_BATCH = "workers.ingest.process_batch"
EMBED_QUERY = "workers.query.embed_query"
REBUILD_CACHE = "workers.cache.rebuild"
SWEEP_STALLED = "workers.maintenance.sweep_stalled"
PRUNE_MEDIA = "workers.maintenance.prune_media"
