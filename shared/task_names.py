"""Task names: the contract between the web tier (which sends by name) and the workers."""

START_JOB = "workers.ingest.start_job"
INGEST_BATCH = "workers.ingest.process_batch"
SEARCH_PHOTO = "workers.query.search_photo"
SEARCH_ITEM = "workers.query.search_item"
FOLD_LISTS = "workers.lists.fold"
RELOAD_LISTS_CACHE = "workers.lists.reload_cache"
