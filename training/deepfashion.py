"""Readers for the DeepFashion benchmark layouts (real or from ``training.synthetic``).

* Category and Attribute Prediction: ``Anno/list_category_img.txt`` (image_name
  category_label), ``Anno/list_bbox.txt`` (image_name x_1 y_1 x_2 y_2) and
  ``Eval/list_eval_partition.txt`` (image_name evaluation_status: train/val/test).
* In-shop Clothes Retrieval: ``Eval/list_eval_partition.txt`` (image_name item_id
  evaluation_status: train/query/gallery), optionally ``Anno/list_bbox_inshop.txt``
  (image_name clothes_type pose_type x_1 y_1 x_2 y_2). Images sit in
  ``img/<GROUP>/<Category>/<item_id>/``: the folder above the item's is its category.

Every list file is: a row count, a header line, then whitespace-separated rows; image names are
relative to the dataset root. Anything malformed raises :class:`DatasetError` naming the file
and line, before any training starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CATEGORY_LIST = Path("Anno/list_category_img.txt")
BBOX_LIST = Path("Anno/list_bbox.txt")
PARTITION_LIST = Path("Eval/list_eval_partition.txt")
INSHOP_BBOX_LIST = Path("Anno/list_bbox_inshop.txt")
# The article's head has 46 outputs: DeepFashion labels 1..46 map to indices 0..45.
NUM_CATEGORIES = 46
CATEGORY_PARTITIONS = ("train", "val", "test")
INSHOP_PARTITIONS = ("train", "query", "gallery")


class DatasetError(Exception):
    """A dataset file that is missing or malformed; the message names the file (and line)."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(path, message)
        self.path = str(path)
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class CategorySample:
    image_path: Path
    label: int  # 0-based index into the 46-way head
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels
    partition: str


@dataclass(frozen=True)
class InShopImage:
    image_path: Path
    item_id: str
    partition: str


@dataclass(frozen=True)
class InShopTrainingImage:
    image_path: Path
    item_id: str
    category: str  # the image's category folder, e.g. "Dresses"
    bbox: tuple[int, int, int, int] | None  # None without Anno/list_bbox_inshop.txt


def read_list(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """Rows of a DeepFashion list file as (line number, fields), checked for shape."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read: {exc}") from None
    if len(lines) < 2:
        raise DatasetError(path, "expected a row count line and a header line")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise DatasetError(path, f"line 1: expected the row count, got {lines[0]!r}") from None
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != columns:
            raise DatasetError(path, f"line {number}: expected {columns} fields, got {line!r}")
        rows.append((number, fields))
    if declared != len(rows):
        raise DatasetError(path, f"line 1 says {declared} rows but the file has {len(rows)}")
    return rows


def _by_name(path: Path, rows: Sequence[tuple[int, list[str]]]) -> dict[str, tuple[int, list[str]]]:
    table: dict[str, tuple[int, list[str]]] = {}
    for number, fields in rows:
        if fields[0] in table:
            raise DatasetError(path, f"line {number}: {fields[0]} listed twice")
        table[fields[0]] = (number, fields[1:])
    return table


def _parse_bbox(path: Path, number: int, values: Sequence[str]) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(v) for v in values)
    except ValueError:
        raise DatasetError(path, f"line {number}: bbox must be 4 integers, got {values}") from None
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise DatasetError(path, f"line {number}: bbox {values} is not x1 < x2, y1 < y2, >= 0")
    return x1, y1, x2, y2


def read_category_dataset(
    root: Path | str,
    *,
    check_images: bool = True,
) -> dict[str, list[CategorySample]]:
    """Samples of the Category and Attribute Prediction layout, by partition."""
    root = Path(root)
    categories = _by_name(root / CATEGORY_LIST, read_list(root / CATEGORY_LIST, 2))
    boxes = _by_name(root / BBOX_LIST, read_list(root / BBOX_LIST, 5))
    partition_path = root / PARTITION_LIST
    partitions = read_list(partition_path, 2)
    out: dict[str, list[CategorySample]] = {name: [] for name in CATEGORY_PARTITIONS}
    for number, (name, partition) in partitions:
        if partition not in out:
            raise DatasetError(
                partition_path,
                f"line {number}: unknown evaluation_status {partition!r} (train, val or test)",
            )
        if name not in categories:
            raise DatasetError(root / CATEGORY_LIST, f"no category label for {name}")
        if name not in boxes:
            raise DatasetError(root / BBOX_LIST, f"no bbox for {name}")
        label_line, (label_text,) = categories[name]
        try:
            label = int(label_text)
        except ValueError:
            label = -1
        if not 1 <= label <= NUM_CATEGORIES:
            raise DatasetError(
                root / CATEGORY_LIST,
                f"line {label_line}: unknown category label {label_text!r} (1..{NUM_CATEGORIES})",
            )
        bbox_line, bbox_values = boxes[name]
        bbox = _parse_bbox(root / BBOX_LIST, bbox_line, bbox_values)
        image_path = root / name
        if check_images and not image_path.is_file():
            raise DatasetError(image_path, f"image listed in {partition_path} not found")
        out[partition].append(CategorySample(image_path, label - 1, bbox, partition))
    return out


def read_inshop(root: Path | str, *, check_images: bool = True) -> list[InShopImage]:
    """Images of the In-shop Clothes Retrieval layout, in file order."""
    root = Path(root)
    path = root / PARTITION_LIST
    images = []
    for number, (name, item_id, partition) in read_list(path, 3):
        if partition not in INSHOP_PARTITIONS:
            raise DatasetError(
                path,
                f"line {number}: unknown evaluation_status {partition!r} (train, query or gallery)",
            )
        image_path = root / name
        if check_images and partition != "train" and not image_path.is_file():
            raise DatasetError(image_path, f"image listed in {path} not found")
        images.append(InShopImage(image_path, item_id, partition))
    return images


def read_inshop_training(root: Path | str) -> list[InShopTrainingImage]:
    """The ``train`` partition of an In-shop layout, with categories and (if listed) boxes."""
    root = Path(root)
    boxes: dict[str, tuple[int, list[str]]] = {}
    bbox_path = root / INSHOP_BBOX_LIST
    if bbox_path.is_file():
        boxes = _by_name(bbox_path, read_list(bbox_path, 7))
    out = []
    for image in read_inshop(root):
        if image.partition != "train":
            continue
        name = image.image_path.relative_to(root).as_posix()
        parts = name.split("/")
        if len(parts) < 4:
            raise DatasetError(
                root / PARTITION_LIST, f"{name}: expected img/<GROUP>/<Category>/<item_id>/<file>"
            )
        if not image.image_path.is_file():
            raise DatasetError(
                image.image_path, f"image listed in {root / PARTITION_LIST} not found"
            )
        bbox = None
        if name in boxes:
            number, fields = boxes[name]
            bbox = _parse_bbox(bbox_path, number, fields[2:])
        out.append(InShopTrainingImage(image.image_path, image.item_id, parts[-3], bbox))
    return out
