"""The domain's words, defined once: vector kinds, item and job statuses, garment categories.

Pure Python, outside ``shared/ml``: the web tier, the workers, training, the demo and the
benchmarks all name these without importing a framework. Enum values are the exact strings the
database's check constraints and the HTTP API use, so a member can be stored, compared with a
column or sent as JSON as it is.

Categories are DeepFashion2's 13; ids are 1-based as in its annotations (Detectron2's class
indices are ``id - 1``).
"""

from __future__ import annotations

from enum import StrEnum


class VectorKind(StrEnum):
    """Which picture a vector embeds: the whole photo or the best top / bottom garment crop."""

    FULL = "full"
    TOP = "top"
    BOTTOM = "bottom"


# The kinds cut out of a photo by the detector (every other kind is the photo itself).
CROP_KINDS: tuple[VectorKind, ...] = (VectorKind.TOP, VectorKind.BOTTOM)
# The order answers and pages list kinds in when the caller names none: crops first, as a
# shopper reads "tops like this one" before look-alikes. Part of the API's contract.
DISPLAY_ORDER: tuple[VectorKind, ...] = (VectorKind.TOP, VectorKind.BOTTOM, VectorKind.FULL)


class ItemStatus(StrEnum):
    """A catalogue item: waiting for its vectors, embedded, or given up on."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class JobStatus(StrEnum):
    """An ingestion job (shared.ingest_state holds the transition rules)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


# A job in one of these has no pending item left and never changes status again.
FINISHED_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED}
)


class JobItemStatus(StrEnum):
    """One item's outcome within one job."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


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
# The four dresses: tops that also cover the lower body.
DRESS_IDS: tuple[int, ...] = (10, 11, 12, 13)


def category_name(category_id: int) -> str:
    """The DeepFashion2 name of a 1-based category id."""
    if not 1 <= category_id <= NUM_CATEGORIES:
        raise ValueError(f"category id {category_id} is outside 1..{NUM_CATEGORIES}")
    return CATEGORY_NAMES[category_id - 1]


def group_of(
    category_id: int,
    top_ids: tuple[int, ...] = TOP_IDS,
    bottom_ids: tuple[int, ...] = BOTTOM_IDS,
) -> VectorKind | None:
    """The crop kind (top or bottom) a 1-based category id belongs to, or None."""
    if category_id in top_ids:
        return VectorKind.TOP
    if category_id in bottom_ids:
        return VectorKind.BOTTOM
    return None
