"""Session-wide random bundles (built once; seconds) and small synthetic photos."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.bundles import make_test_bundle

    return make_test_bundle(
        tmp_path_factory.mktemp("bundle"), detector=True, input_size=64, test_size=128, seed=0
    )


@pytest.fixture(scope="session")
def catalogue_photos() -> list[np.ndarray]:
    """Six synthetic catalogue photos (outfits on a light background), RGB uint8, 192 px."""
    from training.synthetic import make_catalogue_sample

    photos = []
    for index in range(1, 7):
        image, _ = make_catalogue_sample(seed=3, index=index, size=192)
        photos.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return photos
