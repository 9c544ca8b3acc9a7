"""The sample catalogue: synthetic product photos and the labels that say what each shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.synthetic import make_catalogue

LABELS = "labels.json"
RECIPE = "recipe.json"


@dataclass(frozen=True)
class Catalogue:
    folder: Path
    labels: dict[str, dict[str, Any]]

    @property
    def images(self) -> list[Path]:
        return [self.folder / f"{sku}.jpg" for sku in sorted(self.labels)]


def ensure_catalogue(folder: Path, count: int, seed: int, size: int) -> tuple[Catalogue, bool]:
    """The catalogue for (count, seed, size), written once; True when it was written now.

    The generator is deterministic, so a folder whose recipe matches already holds these bytes.
    """
    recipe = {"count": count, "seed": seed, "size": size}
    recipe_path = folder / RECIPE
    labels_path = folder / LABELS
    if (
        recipe_path.is_file()
        and labels_path.is_file()
        and json.loads(recipe_path.read_text(encoding="utf-8")) == recipe
    ):
        catalogue = Catalogue(folder, json.loads(labels_path.read_text(encoding="utf-8")))
        if all(path.is_file() for path in catalogue.images):
            return catalogue, False
    # A different recipe: start from an empty folder so no stale photo is ingested.
    if folder.is_dir():
        for stale in folder.glob("*.jpg"):
            stale.unlink()
    labels = make_catalogue(folder, count=count, seed=seed, size=size)
    recipe_path.write_text(json.dumps(recipe) + "\n", encoding="utf-8")
    return Catalogue(folder, labels), True


def describe(label: dict[str, Any] | None) -> str:
    """``"blue long_sleeved_shirt (stripes)"``, or ``"-"`` when the photo has no such garment."""
    if not label:
        return "-"
    return f"{label['colour']} {label['category']} ({label['pattern']})"
