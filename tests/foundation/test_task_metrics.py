"""Every task, not only ingestion, shows up in /metrics with its duration and outcome."""

import numpy as np

from shared import task_names
from shared.metrics_store import read_task_durations
from tests.recommendations.helpers import add_catalogue


def test_a_list_fold_is_timed_and_exposed_in_metrics(client, settings, db_session, broker_redis):
    from workers.tasks.lists import fold_lists

    add_catalogue(db_session, {"a": {"full": np.zeros(4, np.float32)}})
    result = fold_lists.apply(kwargs={"reason": "test"})
    assert result.successful() and result.result["changes"] == 1
    seen = {(h.task, h.outcome): h for h in read_task_durations(broker_redis)}
    histogram = seen[(task_names.FOLD_LISTS, "success")]
    assert histogram.count == 1 and histogram.total > 0
    body = client.get("/metrics").get_data(as_text=True)
    assert (
        'visrec_task_duration_seconds_count{outcome="success",'
        f'task="{task_names.FOLD_LISTS}"}} 1.0' in body
    )
