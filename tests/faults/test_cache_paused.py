"""The cache Redis paused for 30 s (CLIENT PAUSE): product pages keep answering, exactly, from
PostgreSQL, and no request thread sits on a long socket timeout.

The paused server is one of this test's own: a pause of the machine's shared Redis would stall
every other suite running beside this one."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from shared.config import Settings, set_settings
from tests.recommendations.conftest import fold  # noqa: F401
from tests.recommendations.helpers import add_catalogue
from tests.support.private_redis import private_redis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAUSE_S = 30.0


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """The suite's settings with the cache on a private redis-server (the broker stays shared:
    nothing here pauses it)."""
    base_settings.media_root.mkdir(parents=True, exist_ok=True)
    with private_redis() as url:
        own = dataclasses.replace(base_settings, redis_cache_url=url)
        set_settings(own)
        try:
            yield own
        finally:
            set_settings(None)


def test_product_pages_answer_through_a_paused_cache(
    settings,
    client,
    db_session,
    cache_redis,
    fold,  # noqa: F811
):
    rng = np.random.default_rng(0)
    add_catalogue(
        db_session,
        {f"s{i:02d}": {"full": rng.standard_normal(8).astype(np.float32)} for i in range(30)},
    )
    fold()
    urls = [f"/api/v1/items/s{i:02d}/recommendations?k=5" for i in range(30)]
    want = {url: client.get(url).json for url in urls}
    assert all(client.get(url).headers.get("X-Lists-Generation") for url in urls[:3])
    # A client of its own asks the paused server for a PING: the answer comes when the pause
    # ends, so "before the pause ended" is an order of events, not a time.
    # Its own timeout outlasts the pause (redis-py's default, 5 s, would not).
    prober = redis.Redis.from_url(settings.redis_cache_url, socket_timeout=PAUSE_S + 60)
    cache_redis.execute_command("CLIENT", "PAUSE", str(int(PAUSE_S * 1000)), "ALL")
    ended = threading.Event()
    probe_error: list[BaseException] = []

    def probe() -> None:
        try:
            prober.ping()
        except BaseException as exc:  # noqa: BLE001  (the main thread reports it)
            probe_error.append(exc)
        finally:
            ended.set()

    threading.Thread(target=probe, daemon=True).start()
    answered = 0
    for _ in range(2):
        for url in urls[:10]:
            response = client.get(url)
            assert response.status_code == 200 and response.json == want[url]
            # Every request is answered while the cache is still paused: none waited for the
            # pause to end, nor on socket timeouts adding up to it (the cache's is 0.5 s, paid
            # once per back-off window; twenty requests have PAUSE_S between them).
            assert not ended.is_set(), (
                f"the pause ended before request {answered + 1} was answered {probe_error}"
            )
            answered += 1
    assert ended.wait(PAUSE_S + 60), "the paused cache answered the probe"
    assert probe_error == []
    prober.close()
    # And the cache is used again once it answers.
    wait_until(
        lambda: client.get(urls[0]).headers.get("X-Lists-Generation"),
        30,
        interval=0.5,
        message="the cache read again",
    )
