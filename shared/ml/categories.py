"""DeepFashion2's 13 garment categories and how they split into tops and bottoms.

Pure Python: the web tier, the workers and training share these without importing a framework.
Ids are 1-based, as in DeepFashion2's annotations; Detectron2's class indices are ``id - 1``.
"""

from __future__ import annotations

CATEGORY_NAMES: tuple[str, ...] = (
    "short_sleeved_shirt",
    "long_sleeved_shirt",
    "short_sleeved_outwear",
    "long_sleeved_outwear",
    "vest",
    "sling",
    "shorts",
    "trousers",
    "skirt",
    "short_sleeved_dress",
    "long_sleeved_dress",
    "vest_dress",
    "sling_dress",
)
NUM_CATEGORIES = len(CATEGORY_NAMES)

# The article's top list leaves out sling and sling dress; they are tops like vest and vest dress
# (docs/architecture.md#model-bundles), so a sling dress photo still gets a top crop.
TOP_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
BOTTOM_IDS: tuple[int, ...] = (7, 8, 9)

TOP = "top"
BOTTOM = "bottom"
FULL = "full"
CROP_KINDS: tuple[str, ...] = (TOP, BOTTOM)
VECTOR_KINDS: tuple[str, ...] = (FULL, TOP, BOTTOM)


def category_name(category_id: int) -> str:
    """The DeepFashion2 name of a 1-based category id."""
    if not 1 <= category_id <= NUM_CATEGORIES:
        raise ValueError(f"category id {category_id} is outside 1..{NUM_CATEGORIES}")
    return CATEGORY_NAMES[category_id - 1]


def group_of(
    category_id: int,
    top_ids: tuple[int, ...] = TOP_IDS,
    bottom_ids: tuple[int, ...] = BOTTOM_IDS,
) -> str | None:
    """``"top"``, ``"bottom"`` or None for a 1-based category id."""
    if category_id in top_ids:
        return TOP
    if category_id in bottom_ids:
        return BOTTOM
    return None
