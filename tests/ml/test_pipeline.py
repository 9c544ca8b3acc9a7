"""Photos in, full/top/bottom vectors out, as workers use it."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ml.pipeline import Pipeline, get_pipeline
from tests.ml.helpers import ml_settings
from tests.support.images import encode_jpeg

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def pipeline(test_bundle) -> Pipeline:
    # Threshold 0: the random detector's boxes become crops, so every path is exercised.
    return get_pipeline(ml_settings(test_bundle.root, score_threshold=0.0))


def test_an_undecodable_photo_fails_alone(pipeline, catalogue_photos) -> None:
    payloads = [
        encode_jpeg(catalogue_photos[0]),
        b"this is not an image",
        b"",
        encode_jpeg(catalogue_photos[1]),
    ]
    results = pipeline.process(payloads)
    assert len(results) == 4
    bad, empty = results[1], results[2]
    assert bad.error is not None and bad.error.reason == "undecodable" and not bad.vectors
    assert empty.error is not None and empty.error.reason == "undecodable"
    for good, photo in ((results[0], catalogue_photos[0]), (results[3], catalogue_photos[1])):
        assert good.error is None
        assert (good.height, good.width) == photo.shape[:2]
        assert set(good.vectors) == {"full", *good.crops}
        assert set(good.crops) == {"top", "bottom"}
        for kind, crop in good.crops.items():
            assert crop.kind == kind and 1 <= crop.label <= 13 and crop.label_name
            assert good.vectors[kind].shape == (2048,)
            assert good.vectors[kind].dtype == np.float32


def test_same_photo_twice_gives_identical_vectors(pipeline, catalogue_photos) -> None:
    a, b = pipeline.process_arrays([catalogue_photos[2], catalogue_photos[2]])
    assert a.vectors.keys() == b.vectors.keys()
    for kind in a.vectors:
        np.testing.assert_array_equal(a.vectors[kind], b.vectors[kind])
        assert a.crops.get(kind) == b.crops.get(kind)


def test_a_batch_gives_the_same_vectors_as_one_by_one(pipeline, catalogue_photos) -> None:
    batch = pipeline.process_arrays(catalogue_photos[:4])
    for photo, together in zip(catalogue_photos[:4], batch, strict=True):
        (alone,) = pipeline.process_arrays([photo])
        assert alone.vectors.keys() == together.vectors.keys()
        for kind in alone.vectors:
            np.testing.assert_allclose(
                together.vectors[kind], alone.vectors[kind], rtol=1e-4, atol=1e-4
            )


def test_without_a_detector_only_whole_photo_vectors(catalogue_photos) -> None:
    full_only = get_pipeline(ml_settings(None, embedder_weights="random", embedder_input_size=64))
    assert not full_only.has_detector
    (result,) = full_only.process([encode_jpeg(catalogue_photos[0])])
    assert set(result.vectors) == {"full"} and result.crops == {}


def test_pipelines_are_cached_by_model_version_and_load_lazily(test_bundle) -> None:
    settings = ml_settings(test_bundle.root, score_threshold=0.3)
    first = get_pipeline(settings)
    assert not first.loaded  # nothing is built until the first photo arrives
    assert get_pipeline(settings) is first
    assert first.model_version != test_bundle.model_version  # the threshold is in it
    other = get_pipeline(ml_settings(test_bundle.root, score_threshold=0.4))
    assert other is not first and other.model_version != first.model_version
