"""The sample catalogue: synthetic product photos and the labels that say what each shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.synthetic import ATTRIBUTES, VARIANTS_PER_STYLE, make_catalogue

LABELS = "labels.json"
RECIPE = "recipe.json"


@dataclass(frozen=True)
class Catalogue:
    folder: Path
    labels: dict[str, dict[str, Any]]
    attributes: dict[str, dict[str, Any]]

    @property
    def images(self) -> list[Path]:
        return [self.folder / f"{sku}.jpg" for sku in sorted(self.labels)]

    @property
    def image_attributes(self) -> list[dict[str, Any]]:
        """Each photo's attributes, in the order of :attr:`images`."""
        return [self.attributes[sku] for sku in sorted(self.labels)]


def _read(folder: Path) -> Catalogue:
    def load(name: str) -> dict[str, dict[str, Any]]:
        return json.loads((folder / name).read_text(encoding="utf-8"))

    return Catalogue(folder, load(LABELS), load(ATTRIBUTES))


def ensure_catalogue(folder: Path, count: int, seed: int, size: int) -> tuple[Catalogue, bool]:
    """The catalogue for (count, seed, size), written once; True when it was written now.

    The generator is deterministic, so a folder whose recipe matches already holds these bytes.
    """
    # The variant count names the generator's layout: a folder written before styles had
    # colour variants holds other photos.
    recipe = {"count": count, "seed": seed, "size": size, "variants": VARIANTS_PER_STYLE}
    recipe_path = folder / RECIPE
    if (
        recipe_path.is_file()
        and (folder / LABELS).is_file()
        and (folder / ATTRIBUTES).is_file()
        and json.loads(recipe_path.read_text(encoding="utf-8")) == recipe
    ):
        catalogue = _read(folder)
        if all(path.is_file() for path in catalogue.images):
            return catalogue, False
    # A different recipe: start from an empty folder so no stale photo is ingested.
    if folder.is_dir():
        for stale in folder.glob("*.jpg"):
            stale.unlink()
    make_catalogue(folder, count=count, seed=seed, size=size)
    recipe_path.write_text(json.dumps(recipe) + "\n", encoding="utf-8")
    return _read(folder), True


def describe(label: dict[str, Any] | None) -> str:
    """``"blue long_sleeved_shirt (stripes)"``, or ``"-"`` when the photo has no such garment."""
    if not label:
        return "-"
    return f"{label['colour']} {label['category']} ({label['pattern']})"
