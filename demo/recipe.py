"""What the demo bundle is trained on and how: one place for the numbers, read by the trainer
(:mod:`demo.train_bundle`, in a child process) and by the demo (which says what it used, and
retrains a cached bundle made with another recipe).

Every synthetic set comes from :mod:`training.synthetic`, whose samples are a function of
(generator, seed, index): the training sets use other generators and other seeds than the
sample catalogue (generator "catalogue", seed 0 by default), so no catalogue photo is ever a
training photo.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Measured against the catalogue's labels.json (60 photos), with the detector's one-garment rule
# (shared.ml.detector.one_garment_each); presence right for tops / bottoms. 300 iterations on
# fresh bundles: 93% / 95%, 90% / 83%, 93% / 85% (skirts read off single tops and dresses);
# 400: 90% / 95%; 450: 93% / 92% and 92% / 92% (the second at 128 px, no faster); 256 photos
# with more single tops and dresses at 300 iterations: 75% / 90%. With tiny-gn's narrower heads
# (training.detector_config) 450 iterations take about 140 s and gave 95% / 97%, 92% / 95% and
# 92% / 88% (skirts again); 600 take about 210 s, what 450 of the wider heads took, and gave
# 93% / 93% and 100% / 100% (seeds 11 and 13; 2026-11-30, docs/demo.md#last-measured-run). The
# CPU training is not bit-reproducible: fresh bundles move by a few points.
DETECTOR_PRESET = "tiny-gn"  # training.detector_config.PRESETS
DETECTOR_IMAGES = 128
DETECTOR_IMAGE_SIZE = 256
DETECTOR_SEED = 11
DETECTOR_ITERATIONS = 600
# How often a training photo is a top + bottom, a top alone, a dress, a bottom alone.
DETECTOR_OUTFIT_WEIGHTS = (4, 2, 2, 2)
# The score threshold the demo bundle ships with: a detector this briefly trained is unsure
# of itself, and 0.55 would drop most of its (correct) boxes.
DEMO_SCORE_THRESHOLD = 0.3

# The embedder: metric learning (Proxy-Anchor, every layer) on synthetic In-shop items. Share of
# the ceiling of the demo's precision@5, top / bottom / full, with the detectors of three fresh
# 400-450-iteration bundles: this recipe (random resized crops and flips, half the photos cut
# to their box as the workers cut detected garments, batches of 16 for more steps, 6 epochs)
# 68-65% / 59-51% / 39%; the same for 4 epochs 61-58% / 56-49% / 34%, for 8 epochs 68-58% /
# 64-49% / 30%; three quarters cut to the box 68-65% / 56-51% / 36%; the earlier recipe (whole
# photos, batches of 32, 3 epochs) 68-65% / 49% / 37%; untrained random weights 65-59% / 44-31%
# / 32%: with a good detector, garment crops of drawn shapes are easy to match by colour.
# Look-alikes (full photos at 64 px) stay near 35% whatever the recipe: their vectors match
# colours (twice chance) but not garment types (chance); 96 px inputs and In-shop-style outfit
# photos in the training set did not help (24%, 34%).
EMBEDDER_ITEMS = 200  # half of them are the In-shop "train" partition used here
EMBEDDER_SEED = 12
EMBEDDER_INPUT_SIZE = 64
EMBEDDER_EPOCHS = 6
EMBEDDER_BATCH_SIZE = 16
EMBEDDER_LOSS = "metric"
EMBEDDER_TRAINABLE_LAYERS = "all"
EMBEDDER_LEARNING_RATE = 3e-4
EMBEDDER_CROP_TO_BOX = 0.5
EMBEDDER_AUGMENT = True


def recipe() -> dict[str, Any]:
    """Every number above, by name."""
    return {
        name.lower(): value
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_")
    }


def fingerprint() -> str:
    """Changes whenever the recipe or the detector preset's settings do: a cached bundle of
    another recipe is retrained."""
    from training.detector_config import PRESETS

    settings = {**recipe(), "detector_preset_settings": PRESETS[DETECTOR_PRESET]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def training_data_note(catalogue_seed: int) -> str:
    return (
        f"trained on synthetic data only: {DETECTOR_IMAGES} DeepFashion2-layout photos "
        f"(seed {DETECTOR_SEED}) and {EMBEDDER_ITEMS} In-shop-layout items (seed "
        f"{EMBEDDER_SEED}), other generators and seeds than the catalogue (seed "
        f"{catalogue_seed}): no catalogue photo was seen in training"
    )
