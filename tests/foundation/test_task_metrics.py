"""Every task, not only ingestion, shows up in /metrics with its duration and outcome."""

from shared.metrics_store import read_task_durations


def test_a_cache_rebuild_is_timed_and_exposed_in_metrics(client, settings, broker_redis):
    from workers.tasks.cache import rebuild

    assert rebuild.apply(kwargs={"reason": "test"}).successful()
    seen = {(h.task, h.outcome): h for h in read_task_durations(broker_redis)}
    histogram = seen[("workers.cache.rebuild", "success")]
    assert histogram.count == 1 and histogram.total >= 0
    body = client.get("/metrics").get_data(as_text=True)
    assert (
        'visrec_task_duration_seconds_count{outcome="success",task="workers.cache.rebuild"} 1.0'
        in body
    )
