"""Convert DeepFashion2 annotation files to one COCO-format JSON file.

Usage::

    python -m training.deepfashion2_to_coco --annos DIR --images DIR --out FILE [--workers N]

The output is byte for byte what the DeepFashion2 authors' converter
(``evaluation/deepfashion2_to_coco.py``, also step 1 of the seed article) writes for the same
input: ``json.dump`` with default separators of ``{"info", "licenses", "images", "annotations",
"categories"}``, the 13 clothes categories with keypoint names '1'..'294', one image entry per
annotation file and one annotation per item, the item's landmarks placed at its category's
offset in a 294-point vector of floats.

Where this tool differs from that script:

* It scans ``--annos`` for ``*.json`` instead of counting up to a hard-coded number. When every
  file stem is a decimal number (``000001.json``) and those numbers are distinct, files are taken
  in numeric order and the image id is the number, as in the reference. Otherwise files are taken
  in sorted file-name order and image ids are 1, 2, 3... in that order.
* The image is ``<stem>.jpg`` in ``--images`` (falling back to ``.jpeg`` / ``.png``); only its
  header is read, for the size. ``file_name`` is the name of the file found.
* It streams: image entries go straight to the output and annotations to a temporary file next to
  it, concatenated at the end, so memory stays flat on the 191,961-file train split. The output
  appears (atomically renamed) only when the whole conversion succeeded.
* It checks its input. A malformed annotation file (bad JSON, no ``pair_id``, an item missing a
  field, an unknown category id, landmarks whose length does not match the category, a missing or
  unreadable image) stops the run with a message naming the file and exit status 2. The
  reference would crash with a traceback or, for an unknown category, silently write zeros.
* ``--workers N`` parses files in N processes; output order and bytes do not depend on N.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

# One list of the 13 classes for the whole project; re-exported for the training tools.
from shared.vocabulary import CATEGORY_NAMES

# Start of each category's landmarks in the shared 294-point vector; category c owns
# KEYPOINT_OFFSETS[c - 1] up to KEYPOINT_OFFSETS[c].
KEYPOINT_OFFSETS: tuple[int, ...] = (
    0,
    25,
    58,
    89,
    128,
    143,
    158,
    168,
    182,
    190,
    219,
    256,
    275,
    294,
)
NUM_KEYPOINTS = KEYPOINT_OFFSETS[-1]
LANDMARK_COUNTS: tuple[int, ...] = tuple(end - start for start, end in pairwise(KEYPOINT_OFFSETS))
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
# Top-level keys of an annotation file that are not items (the reference skips exactly these).
NON_ITEM_KEYS = frozenset({"source", "pair_id"})
ITEM_FIELDS: tuple[str, ...] = (
    "bounding_box",
    "category_id",
    "style",
    "segmentation",
    "landmarks",
)

EXIT_USER_ERROR = 2


class ConversionError(Exception):
    """A problem with the input, reported to the user without a traceback."""

    def __init__(self, path: str, message: str) -> None:
        # Both values go to Exception.args so the error pickles back from a worker process.
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Task:
    """One annotation file to convert, with the image id decided up front."""

    anno_path: str
    images_dir: str
    image_id: int


@dataclass(frozen=True)
class FileResult:
    """The serialised output for one annotation file.

    Annotation ids are a global counter, unknown to a worker, so each annotation comes back as
    the JSON text before and after its id value.
    """

    image_json: str
    annotation_parts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Summary:
    images: int
    annotations: int


def categories() -> list[dict[str, Any]]:
    """The COCO ``categories`` list, as the reference writes it."""
    keypoint_names = [str(i) for i in range(1, NUM_KEYPOINTS + 1)]
    return [
        {
            "id": index + 1,
            "name": name,
            "supercategory": "clothes",
            "keypoints": keypoint_names,
            "skeleton": [],
        }
        for index, name in enumerate(CATEGORY_NAMES)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def list_annotation_files(annos_dir: Path) -> list[tuple[Path, int]]:
    """Annotation files in conversion order, each with its image id (see module docstring)."""
    if not annos_dir.is_dir():
        raise ConversionError(str(annos_dir), "annotations folder not found")
    paths = [p for p in annos_dir.iterdir() if p.suffix == ".json" and p.is_file()]
    if not paths:
        raise ConversionError(str(annos_dir), "no .json annotation files found")
    stems = [p.stem for p in paths]
    numeric = all(s.isascii() and s.isdigit() for s in stems)
    if numeric and len({int(s) for s in stems}) == len(stems):
        return sorted(((p, int(p.stem)) for p in paths), key=lambda pair: pair[1])
    return [(p, index) for index, p in enumerate(sorted(paths, key=lambda p: p.name), start=1)]


def find_image(images_dir: Path, stem: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        candidate = images_dir / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    return None


def image_size(anno_path: str, image_path: Path) -> tuple[int, int]:
    """Width and height from the image header; the pixels are never decoded."""
    try:
        with Image.open(image_path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ConversionError(anno_path, f"cannot read image {image_path}: {exc}") from None


def load_annotation(anno_path: str) -> dict[str, Any]:
    try:
        with open(anno_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ConversionError(anno_path, f"invalid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(anno_path, f"cannot read file: {exc}") from None
    if not isinstance(data, dict):
        raise ConversionError(anno_path, "expected a JSON object at the top level")
    if "pair_id" not in data:
        raise ConversionError(anno_path, "missing field 'pair_id'")
    return data


def validate_item(anno_path: str, key: str, item: Any) -> None:
    """Reject anything the reference would crash on or convert into silent garbage."""
    where = f"item {key!r}"
    if not isinstance(item, dict):
        raise ConversionError(anno_path, f"{where}: expected an object")
    missing = [field for field in ITEM_FIELDS if field not in item]
    if missing:
        raise ConversionError(anno_path, f"{where}: missing field(s) {', '.join(missing)}")
    category = item["category_id"]
    if not isinstance(category, int) or isinstance(category, bool) or not 1 <= category <= 13:
        raise ConversionError(anno_path, f"{where}: unknown category_id {category!r} (1..13)")
    box = item["bounding_box"]
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise ConversionError(anno_path, f"{where}: bounding_box must be 4 numbers [x1,y1,x2,y2]")
    landmarks = item["landmarks"]
    expected = 3 * LANDMARK_COUNTS[category - 1]
    if not isinstance(landmarks, list) or not all(_is_number(v) for v in landmarks):
        raise ConversionError(anno_path, f"{where}: landmarks must be a list of numbers")
    if len(landmarks) != expected:
        raise ConversionError(
            anno_path,
            f"{where}: category {category} ({CATEGORY_NAMES[category - 1]}) needs "
            f"{expected} landmark values ({expected // 3} x,y,v triples), got {len(landmarks)}",
        )
    if not isinstance(item["segmentation"], list):
        raise ConversionError(anno_path, f"{where}: segmentation must be a list of polygons")


def keypoint_vector(category: int, landmarks: Sequence[float]) -> list[float]:
    """The item's x,y,v triples at its category's offset, zeros elsewhere, all floats.

    Floats because the reference fills ``np.zeros`` and calls ``tolist()``.
    """
    points = [0.0] * (3 * NUM_KEYPOINTS)
    start = 3 * KEYPOINT_OFFSETS[category - 1]
    points[start : start + len(landmarks)] = [float(v) for v in landmarks]
    return points


def annotation_parts(item: dict[str, Any], pair_id: Any, image_id: int) -> tuple[str, str]:
    """JSON text of one COCO annotation, split where its global ``id`` goes.

    ``prefix + str(id) + suffix`` equals ``json.dumps`` of the reference's dict.
    """
    box = item["bounding_box"]
    # Same arithmetic as the reference, so int boxes stay int and float boxes float.
    width = box[2] - box[0]
    height = box[3] - box[1]
    category = item["category_id"]
    landmarks = item["landmarks"]
    before = {
        "area": width * height,
        "bbox": [box[0], box[1], width, height],
        "category_id": category,
    }
    after = {
        "pair_id": pair_id,
        "image_id": image_id,
        "iscrowd": 0,
        "style": item["style"],
        "num_keypoints": sum(1 for v in landmarks[2::3] if v > 0),
        "keypoints": keypoint_vector(category, landmarks),
        "segmentation": item["segmentation"],
    }
    prefix = json.dumps(before)[:-1] + ', "id": '
    suffix = ", " + json.dumps(after)[1:]
    return prefix, suffix


def convert_file(task: Task) -> FileResult:
    """Parse and check one annotation file; runs in a worker process when --workers > 1."""
    anno_path = task.anno_path
    stem = Path(anno_path).stem
    image_path = find_image(Path(task.images_dir), stem)
    if image_path is None:
        raise ConversionError(
            anno_path, f"image not found: {Path(task.images_dir) / (stem + '.jpg')}"
        )
    data = load_annotation(anno_path)
    width, height = image_size(anno_path, image_path)
    image_entry = {
        "coco_url": "",
        "date_captured": "",
        "file_name": image_path.name,
        "flickr_url": "",
        "id": task.image_id,
        "license": 0,
        "width": width,
        "height": height,
    }
    parts = []
    for key, item in data.items():
        if key in NON_ITEM_KEYS:
            continue
        validate_item(anno_path, key, item)
        parts.append(annotation_parts(item, data["pair_id"], task.image_id))
    return FileResult(json.dumps(image_entry), tuple(parts))


def _results(tasks: list[Task], workers: int) -> Iterator[FileResult]:
    if workers <= 1:
        for task in tasks:
            yield convert_file(task)
        return
    # imap keeps input order, so the output does not depend on the number of workers.
    chunksize = max(1, min(256, len(tasks) // (workers * 8)))
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(convert_file, tasks, chunksize=chunksize)


def _write_list(out: IO[str], entries: Iterator[str]) -> None:
    for number, entry in enumerate(entries):
        if number:
            out.write(", ")
        out.write(entry)


def _stream(
    tasks: list[Task], workers: int, out: IO[str], spill: IO[str], progress: bool
) -> Summary:
    """Write the image list to ``out`` and the annotation list to ``spill``."""
    annotation_id = 0
    image_count = 0
    # closing() stops the worker pool promptly if writing fails half-way.
    with (
        tqdm(
            total=len(tasks),
            unit="file",
            desc="deepfashion2_to_coco",
            file=sys.stderr,
            disable=not progress,
            mininterval=1.0,
        ) as bar,
        closing(_results(tasks, workers)) as results,
    ):
        for result in results:
            if image_count:
                out.write(", ")
            out.write(result.image_json)
            image_count += 1
            for prefix, suffix in result.annotation_parts:
                if annotation_id:
                    spill.write(", ")
                annotation_id += 1
                spill.write(f"{prefix}{annotation_id}{suffix}")
            bar.update()
    return Summary(images=image_count, annotations=annotation_id)


def convert(
    annos_dir: Path | str,
    images_dir: Path | str,
    out_path: Path | str,
    workers: int = 1,
    progress: bool = True,
) -> Summary:
    """Convert a DeepFashion2 split to COCO JSON at ``out_path``; raises ConversionError."""
    annos_dir, images_dir, out_path = Path(annos_dir), Path(images_dir), Path(out_path)
    if not images_dir.is_dir():
        raise ConversionError(str(images_dir), "images folder not found")
    tasks = [
        Task(str(path), str(images_dir), image_id)
        for path, image_id in list_annotation_files(annos_dir)
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Both temporaries live next to the output so the final rename is atomic and the spill
    # file is on a disk known to have room for the result.
    # Not mkstemp: its 0600 mode would stick to the renamed output; "x" honours the umask.
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    try:
        with (
            open(partial, "x", encoding="utf-8") as out,
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=out_path.parent) as spill,
        ):
            out.write('{"info": {}, "licenses": [], "images": [')
            summary = _stream(tasks, workers, out, spill, progress)
            out.write('], "annotations": [')
            spill.seek(0)
            shutil.copyfileobj(spill, out, 1 << 20)
            out.write('], "categories": [')
            _write_list(out, (json.dumps(c) for c in categories()))
            out.write("]}")
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return summary


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.deepfashion2_to_coco",
        description="Convert DeepFashion2 annotations (one JSON per image) to COCO JSON, "
        "byte-identical to the dataset authors' converter.",
    )
    parser.add_argument(
        "--annos",
        required=True,
        type=Path,
        help="folder of DeepFashion2 annotation files (000001.json ...)",
    )
    parser.add_argument(
        "--images", required=True, type=Path, help="folder of the matching images (000001.jpg ...)"
    )
    parser.add_argument("--out", required=True, type=Path, help="COCO JSON file to write")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes parsing files in parallel (output is the same)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = convert(
            args.annos, args.images, args.out, workers=args.workers, progress=not args.quiet
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # Output-side failures (disk full, unwritable folder) are not the input's fault.
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out}: {summary.images} images, {summary.annotations} annotations",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
