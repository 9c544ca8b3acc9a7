"""How well the bundle's detector found the catalogue's garments, against ``labels.json``.

Per photo and per kind (top, bottom) the detector either kept a crop or not. Against the labels:
*found when present* (recall) is the share of photos showing such a garment that got a crop;
*none when absent* (specificity) the share of photos without one that got none; *presence
right* is both together over every photo; *category right* is the share of found garments whose
detected category is the labelled one (DeepFashion2 names on both sides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demo.phases import say
from shared.vocabulary import CROP_KINDS


@dataclass(frozen=True)
class DetectionScore:
    kind: str
    photos: int
    present: int
    found_when_present: int
    absent: int
    none_when_absent: int
    category_right: int

    @property
    def recall(self) -> float | None:
        return self.found_when_present / self.present if self.present else None

    @property
    def specificity(self) -> float | None:
        return self.none_when_absent / self.absent if self.absent else None

    @property
    def presence_right(self) -> float:
        return (self.found_when_present + self.none_when_absent) / self.photos

    @property
    def category_accuracy(self) -> float | None:
        found = self.found_when_present
        return self.category_right / found if found else None


def detections_of(item: Mapping[str, Any], model_version: str | None) -> dict[str, str]:
    """``{kind: detected category name}`` from an item document (``GET /api/v1/items/<sku>``).

    Only vectors of ``model_version`` count (an earlier bundle's may still be stored).
    """
    found = {}
    for vector in item.get("vectors") or []:
        if model_version is not None and vector.get("model_version") != model_version:
            continue
        if vector.get("kind") in CROP_KINDS:
            found[vector["kind"]] = vector.get("label_name") or "?"
    return found


def score_detections(
    detected: Mapping[str, Mapping[str, str]], labels: Mapping[str, Mapping[str, Any]]
) -> list[DetectionScore]:
    """One :class:`DetectionScore` per crop kind over the photos in ``detected``."""
    scores = []
    for kind in CROP_KINDS:
        present = found = absent = none = right = 0
        for sku, kinds in detected.items():
            truth = labels[sku].get(kind)
            got = kinds.get(kind)
            if truth:
                present += 1
                if got is not None:
                    found += 1
                    right += got == truth["category"]
            else:
                absent += 1
                none += got is None
        scores.append(DetectionScore(kind, len(detected), present, found, absent, none, right))
    return scores


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_detection(scores: Sequence[DetectionScore]) -> None:
    say("\n   detection against labels.json (the detector's kept top and bottom per photo)")
    say(
        f"   {'kind':<8}{'photos':>7}{'presence right':>16}{'found when present':>20}"
        f"{'none when absent':>18}{'category right':>16}"
    )
    for s in scores:
        say(
            f"   {s.kind:<8}{s.photos:>7}{_share(s.presence_right):>16}"
            f"{_share(s.recall) + f' of {s.present}':>20}"
            f"{_share(s.specificity) + f' of {s.absent}':>18}"
            f"{_share(s.category_accuracy) + f' of {s.found_when_present}':>16}"
        )
