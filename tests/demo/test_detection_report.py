"""The demo's detection report: found when present, none when absent, category right."""

from __future__ import annotations

import pytest

from demo.detection import detections_of, print_detection, score_detections
from demo.recipe import fingerprint, training_data_note

LABELS = {
    "S1": {
        "top": {"category": "vest", "colour": "red", "pattern": "solid"},
        "bottom": {"category": "shorts", "colour": "blue", "pattern": "dots"},
    },
    "S2": {"top": None, "bottom": {"category": "skirt", "colour": "grey", "pattern": "solid"}},
    "S3": {
        "top": {"category": "sling_dress", "colour": "pink", "pattern": "solid"},
        "bottom": None,
    },
    "S4": {
        "top": {"category": "vest", "colour": "teal", "pattern": "stripes"},
        "bottom": {"category": "trousers", "colour": "navy", "pattern": "solid"},
    },
}


def _item(*vectors: tuple[str, str | None, str]) -> dict:
    return {
        "vectors": [
            {"kind": kind, "label_name": name, "model_version": version}
            for kind, name, version in vectors
        ]
    }


def test_detections_count_only_the_serving_model_version() -> None:
    item = _item(("full", None, "new"), ("top", "vest", "new"), ("bottom", "skirt", "old"))
    assert detections_of(item, "new") == {"top": "vest"}
    assert detections_of(item, None) == {"top": "vest", "bottom": "skirt"}


def test_scores_against_the_labels(capsys: pytest.CaptureFixture[str]) -> None:
    detected = {
        "S1": {"top": "vest", "bottom": "trousers"},  # both found; the bottom's category wrong
        "S2": {"top": "sling", "bottom": "skirt"},  # a top where there is none
        "S3": {"top": "sling_dress"},  # right: a dress has no bottom
        "S4": {"bottom": "trousers"},  # the top missed
    }
    top, bottom = score_detections(detected, LABELS)

    assert (top.present, top.found_when_present, top.absent, top.none_when_absent) == (3, 2, 1, 0)
    assert top.recall == pytest.approx(2 / 3) and top.specificity == 0.0
    assert top.presence_right == pytest.approx(2 / 4)
    assert top.category_accuracy == 1.0
    assert (bottom.present, bottom.found_when_present, bottom.absent, bottom.none_when_absent) == (
        3,
        3,
        1,
        1,
    )
    assert bottom.presence_right == 1.0
    assert bottom.category_accuracy == pytest.approx(2 / 3)

    print_detection([top, bottom])
    out = capsys.readouterr().out
    assert "50%" in out and "67% of 3" in out and "0% of 1" in out


def test_the_demo_says_its_training_data_is_not_the_catalogue() -> None:
    note = training_data_note(catalogue_seed=0)
    assert "synthetic" in note and "catalogue (seed 0)" in note
    assert len(fingerprint()) == 16


def test_the_demo_bundle_fingerprint_follows_the_detector_preset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training import detector_config

    before = fingerprint()
    narrower = {**detector_config.PRESETS["tiny-gn"], "MODEL.FPN.OUT_CHANNELS": 32}
    monkeypatch.setitem(detector_config.PRESETS, "tiny-gn", narrower)
    assert fingerprint() != before
