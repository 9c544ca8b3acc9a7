from pathlib import Path

import pytest

from shared.config import load_settings, settings_to_env


def test_environment_variables_use_contract_names():
    env = {
        "DATABASE_URL": "postgresql+psycopg://u@db:5432/x",
        "REDIS_BROKER_URL": "redis://broker:6379/0",
        "REDIS_CACHE_URL": "redis://cache:6379/0",
        "MEDIA_ROOT": "/data/media",
        "IMPORT_ROOT": "/data/import",
        "MODEL_DIR": "/models",
        "EMBEDDER_WEIGHTS": "random",
        "API_KEYS": "k1, k2,,",
        "PORT": "9000",
        "INGEST_BATCH_SIZE": "32",
        "FETCH_ALLOW_PRIVATE": "true",
        "FETCH_ALLOWED_PORTS": "443, 8443",
    }
    s = load_settings(environ=env)
    assert s.database_url == env["DATABASE_URL"]
    assert s.redis_broker_url != s.redis_cache_url
    assert s.media_root == Path("/data/media")
    assert s.import_root == Path("/data/import")
    assert s.model_dir == Path("/models")
    assert s.embedder_weights == "random"
    assert s.api_keys == ("k1", "k2")
    assert s.port == 9000
    assert s.ingest_batch_size == 32
    assert s.fetch_allow_private is True
    assert s.fetch_allowed_ports == (443, 8443)
    assert load_settings(environ=settings_to_env(s)).fetch_allowed_ports == (443, 8443)


def test_overrides_win_over_environment_and_round_trip_to_env():
    s = load_settings(
        {"ingest_batch_size": 4, "model_dir": "/tmp/b"}, environ={"INGEST_BATCH_SIZE": "64"}
    )
    assert s.ingest_batch_size == 4
    assert s.model_dir == Path("/tmp/b")
    again = load_settings(environ=settings_to_env(s))
    assert again.ingest_batch_size == 4
    assert again.model_dir == Path("/tmp/b")
    assert again.database_url == s.database_url


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="INGEST_BATCH_SIZE"):
        load_settings(environ={"INGEST_BATCH_SIZE": "lots"})


def test_a_mistyped_override_is_refused_with_its_name():
    # A typo must not be silently ignored: the process would run with the default instead.
    with pytest.raises(ValueError, match="INGEST_BATCH_SIZ"):
        load_settings({"ingest_batch_siz": 4}, environ={})


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("FETCH_ALLOW_PRIVATE", "maybe"),
        ("QUERY_TIMEOUT_S", "soon"),
        ("FETCH_ALLOWED_PORTS", "443,https"),
        ("MEDIA_ROOT", " "),
        ("PORT", "8000.5"),
    ],
)
def test_an_unparsable_value_is_refused_with_its_name(variable, raw):
    with pytest.raises(ValueError, match=variable):
        load_settings(environ={variable: raw})


def test_types_come_from_the_fields_themselves():
    s = load_settings(
        environ={
            "SCORE_THRESHOLD": "0.6",
            "DETECTOR_TEST_SIZE": "512",
            "EMBEDDER_INPUT_SIZE": "",
            "FETCH_ALLOW_PRIVATE": "off",
            "PRELOAD_MODELS": "yes",
            "PUBLIC_BASE_URL": "https://shop.example",
        }
    )
    assert s.score_threshold == 0.6
    assert s.detector_test_size == 512
    # Empty means unset for an optional setting.
    assert s.embedder_input_size is None
    assert s.fetch_allow_private is False
    assert s.preload_models is True
    assert s.public_base_url == "https://shop.example"
    # Overrides given as strings parse as the environment's would.
    assert load_settings({"port": "9001"}, environ={}).port == 9001
