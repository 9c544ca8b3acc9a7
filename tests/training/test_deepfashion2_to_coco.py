"""The DeepFashion2 -> COCO converter: exact output, input checks, workers, synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from training import synthetic
from training.deepfashion2_to_coco import convert, main

REPO = Path(__file__).resolve().parents[2]

NAMES = [
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
]

# Hand-written input. Shorts (category 7) has 10 landmarks starting at point 158, vest (5) 15 at
# point 128, skirt (9) 8 at point 182: the reference converter's table, typed in independently.
SHORTS_LANDMARKS = [
    10,
    20,
    2,
    12,
    22,
    2,
    0,
    0,
    0,
    14,
    24,
    1,
    16,
    26,
    2,
    0,
    0,
    0,
    18,
    28,
    2,
    20,
    30,
    2,
    22,
    32,
    1,
    0,
    0,
    0,
]
VEST_LANDMARKS = [value for k in range(15) for value in (3 + k, 4.5 + k, 2)]
SKIRT_LANDMARKS = [
    5,
    6,
    2,
    7,
    8,
    2,
    9,
    10,
    0,
    11,
    12,
    2,
    13,
    14,
    2,
    15,
    16,
    2,
    17,
    18,
    2,
    19,
    20,
    2,
]
MULTI_POLYGON = [[2, 3, 10, 3, 10, 12, 2, 12], [12.5, 3, 20, 3, 20, 12.5]]

ANNOTATIONS: dict[str, dict[str, Any]] = {
    "000001": {
        "source": "user",
        "pair_id": 7,
        "item1": {
            "segmentation": [[8, 18, 30, 18, 30, 40, 8, 40]],
            "scale": 2,
            "viewpoint": 2,
            "zoom_in": 1,
            "occlusion": 1,
            "landmarks": SHORTS_LANDMARKS,
            "style": 1,
            "bounding_box": [8, 18, 30, 40],
            "category_id": 7,
            "category_name": "shorts",
        },
        "item2": {
            "segmentation": MULTI_POLYGON,
            "landmarks": VEST_LANDMARKS,
            "style": 0,
            "bounding_box": [1.5, 2, 20, 12.5],
            "category_id": 5,
            "category_name": "vest",
        },
    },
    # Items before and between the non-item keys: file order decides.
    "000002": {
        "item2": {
            "segmentation": [[1, 1, 9, 1, 5, 9]],
            "landmarks": SKIRT_LANDMARKS,
            "style": 2,
            "bounding_box": [1, 1, 9, 9],
            "category_id": 9,
        },
        "pair_id": 8,
        "item1": {
            "segmentation": [[0, 0, 4, 0, 4, 4]],
            "landmarks": [0] * 30,
            "style": 0,
            "bounding_box": [0, 0, 4, 4],
            "category_id": 7,
        },
        "source": "shop",
    },
    "000003": {"source": "shop", "pair_id": 9},
}
IMAGE_SIZES = {"000001": (64, 48), "000002": (32, 32), "000003": (20, 10)}


def keypoints(start: int, landmarks: list[float]) -> list[float]:
    points = [0.0] * 882
    for offset, value in enumerate(landmarks):
        points[3 * start + offset] = float(value)
    return points


def category(index: int, name: str) -> dict[str, Any]:
    return {
        "id": index,
        "name": name,
        "supercategory": "clothes",
        "keypoints": [str(i) for i in range(1, 295)],
        "skeleton": [],
    }


def image(image_id: int, width: int, height: int) -> dict[str, Any]:
    return {
        "coco_url": "",
        "date_captured": "",
        "file_name": f"{image_id:06d}.jpg",
        "flickr_url": "",
        "id": image_id,
        "license": 0,
        "width": width,
        "height": height,
    }


EXPECTED: dict[str, Any] = {
    "info": {},
    "licenses": [],
    "images": [image(1, 64, 48), image(2, 32, 32), image(3, 20, 10)],
    "annotations": [
        {
            "area": 22 * 22,
            "bbox": [8, 18, 22, 22],
            "category_id": 7,
            "id": 1,
            "pair_id": 7,
            "image_id": 1,
            "iscrowd": 0,
            "style": 1,
            "num_keypoints": 7,
            "keypoints": keypoints(158, SHORTS_LANDMARKS),
            "segmentation": [[8, 18, 30, 18, 30, 40, 8, 40]],
        },
        {
            "area": 18.5 * 10.5,
            "bbox": [1.5, 2, 18.5, 10.5],
            "category_id": 5,
            "id": 2,
            "pair_id": 7,
            "image_id": 1,
            "iscrowd": 0,
            "style": 0,
            "num_keypoints": 15,
            "keypoints": keypoints(128, VEST_LANDMARKS),
            "segmentation": MULTI_POLYGON,
        },
        {
            "area": 64,
            "bbox": [1, 1, 8, 8],
            "category_id": 9,
            "id": 3,
            "pair_id": 8,
            "image_id": 2,
            "iscrowd": 0,
            "style": 2,
            "num_keypoints": 7,
            "keypoints": keypoints(182, SKIRT_LANDMARKS),
            "segmentation": [[1, 1, 9, 1, 5, 9]],
        },
        {
            "area": 16,
            "bbox": [0, 0, 4, 4],
            "category_id": 7,
            "id": 4,
            "pair_id": 8,
            "image_id": 2,
            "iscrowd": 0,
            "style": 0,
            "num_keypoints": 0,
            "keypoints": [0.0] * 882,
            "segmentation": [[0, 0, 4, 0, 4, 4]],
        },
    ],
    "categories": [category(i, name) for i, name in enumerate(NAMES, start=1)],
}


def write_split(
    root: Path,
    annotations: dict[str, Any],
    sizes: dict[str, tuple[int, int]],
    raw: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    annos, images = root / "annos", root / "image"
    annos.mkdir(parents=True)
    images.mkdir(parents=True)
    for stem, data in annotations.items():
        (annos / f"{stem}.json").write_text(json.dumps(data), encoding="utf-8")
    for stem, text in (raw or {}).items():
        (annos / f"{stem}.json").write_text(text, encoding="utf-8")
    for stem, size in sizes.items():
        Image.new("RGB", size, (200, 200, 200)).save(images / f"{stem}.jpg")
    return annos, images


def run_main(annos: Path, images: Path, out: Path, *extra: str) -> int:
    return main(
        ["--annos", str(annos), "--images", str(images), "--out", str(out), "--quiet", *extra]
    )


def test_output_is_exactly_the_reference_bytes(tmp_path: Path) -> None:
    annos, images = write_split(tmp_path, ANNOTATIONS, IMAGE_SIZES)
    out = tmp_path / "coco.json"
    assert run_main(annos, images, out) == 0
    # The reference ends with json.dump(dataset, f): default separators, ASCII, one line.
    assert out.read_bytes() == json.dumps(EXPECTED).encode("ascii")


def test_value_types_follow_the_reference(tmp_path: Path) -> None:
    annos, images = write_split(tmp_path, ANNOTATIONS, IMAGE_SIZES)
    out = tmp_path / "coco.json"
    convert(annos, images, out, progress=False)
    data = json.loads(out.read_text())
    assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
    first, second = data["annotations"][:2]
    assert isinstance(first["area"], int) and all(isinstance(v, int) for v in first["bbox"])
    assert isinstance(second["area"], float)
    assert all(isinstance(v, float) for v in first["keypoints"])
    assert len(first["keypoints"]) == 294 * 3


def test_non_numeric_stems_get_sequential_ids_in_sorted_order(tmp_path: Path) -> None:
    data = {"b_look": ANNOTATIONS["000003"], "a_look": ANNOTATIONS["000002"]}
    annos, images = write_split(tmp_path, data, {"a_look": (8, 8), "b_look": (9, 9)})
    out = tmp_path / "coco.json"
    convert(annos, images, out, progress=False)
    result = json.loads(out.read_text())
    assert [(i["id"], i["file_name"]) for i in result["images"]] == [
        (1, "a_look.jpg"),
        (2, "b_look.jpg"),
    ]
    assert [a["image_id"] for a in result["annotations"]] == [1, 1]


def test_numeric_stems_are_taken_in_numeric_order(tmp_path: Path) -> None:
    data = {"10": ANNOTATIONS["000003"], "9": ANNOTATIONS["000003"]}
    annos, images = write_split(tmp_path, data, {"9": (8, 8), "10": (8, 8)})
    out = tmp_path / "coco.json"
    convert(annos, images, out, progress=False)
    assert [i["id"] for i in json.loads(out.read_text())["images"]] == [9, 10]


def _with_item(**changes: Any) -> dict[str, Any]:
    item = dict(ANNOTATIONS["000002"]["item2"], **changes)
    return {"source": "user", "pair_id": 1, "item1": item}


MALFORMED = {
    "unknown category": (_with_item(category_id=14), "unknown category_id 14"),
    "wrong landmark count": (_with_item(landmarks=SKIRT_LANDMARKS[:-3]), "needs 24 landmark"),
    "landmarks for another category": (_with_item(category_id=8), "needs 42 landmark"),
    "missing field": ({"pair_id": 1, "item1": {"category_id": 9}}, "missing field"),
    "missing pair_id": ({"source": "user"}, "missing field 'pair_id'"),
    "bad bounding box": (_with_item(bounding_box=[1, 2, 3]), "bounding_box"),
    "item is not an object": ({"pair_id": 1, "item1": [1, 2]}, "expected an object"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotation_names_the_file(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, message = MALFORMED[case]
    annos, images = write_split(
        tmp_path,
        {"000001": ANNOTATIONS["000003"], "000002": data},
        {"000001": (8, 8), "000002": (8, 8)},
    )
    out = tmp_path / "coco.json"
    assert run_main(annos, images, out) == 2
    err = capsys.readouterr().err
    assert str(annos / "000002.json") in err
    assert message in err
    # Neither the output nor a partial or spill file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annos", "image"]


def test_bad_json_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annos, images = write_split(
        tmp_path, {}, {"000001": (8, 8)}, raw={"000001": '{"pair_id": 1, "item1": '}
    )
    assert run_main(annos, images, tmp_path / "coco.json") == 2
    err = capsys.readouterr().err
    assert str(annos / "000001.json") in err and "invalid JSON" in err


def test_missing_image_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annos, images = write_split(tmp_path, ANNOTATIONS, {"000001": (8, 8), "000003": (8, 8)})
    assert run_main(annos, images, tmp_path / "coco.json") == 2
    err = capsys.readouterr().err
    assert str(annos / "000002.json") in err
    assert "image not found" in err and "000002.jpg" in err


def test_cli_user_error_exits_2_without_traceback(tmp_path: Path) -> None:
    annos, images = write_split(tmp_path, {"000001": _with_item(category_id=0)}, {"000001": (8, 8)})
    out = tmp_path / "coco.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.deepfashion2_to_coco",
            "--annos",
            str(annos),
            "--images",
            str(images),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{annos / '000001.json'}: item 'item1': unknown category_id 0" in result.stderr
    assert not out.exists()


def test_workers_give_identical_bytes(tmp_path: Path) -> None:
    synthetic.write_deepfashion2(tmp_path / "df2", count=40, size=96, seed=3)
    annos, images = tmp_path / "df2" / "annos", tmp_path / "df2" / "image"
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert run_main(annos, images, one, "--workers", "1") == 0
    assert run_main(annos, images, two, "--workers", "2") == 0
    assert one.read_bytes() == two.read_bytes()


def test_workers_report_the_first_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic.write_deepfashion2(tmp_path / "df2", count=12, size=96, seed=5)
    annos, images = tmp_path / "df2" / "annos", tmp_path / "df2" / "image"
    for stem in ("000004", "000009"):
        (annos / f"{stem}.json").write_text("not json", encoding="utf-8")
    assert run_main(annos, images, tmp_path / "coco.json", "--workers", "3") == 2
    err = capsys.readouterr().err
    assert "000004.json" in err and "000009.json" not in err


def test_synthetic_split_converts_and_loads_with_pycocotools(tmp_path: Path) -> None:
    paths = synthetic.write_deepfashion2(tmp_path / "df2", count=25, size=128, seed=11)
    out = tmp_path / "coco.json"
    summary = convert(tmp_path / "df2" / "annos", tmp_path / "df2" / "image", out, progress=False)
    items = [
        item
        for path in paths
        for key, item in json.loads(path.read_text()).items()
        if key.startswith("item")
    ]
    assert (summary.images, summary.annotations) == (25, len(items))
    data = json.loads(out.read_text())
    assert [a["category_id"] for a in data["annotations"]] == [i["category_id"] for i in items]
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(items) + 1))
    assert data["annotations"], "the sample has garments to box"
    for annotation in data["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128

    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(out))
    assert len(coco.getImgIds()) == 25
    assert len(coco.getAnnIds()) == len(items)
    assert sorted(coco.getCatIds()) == list(range(1, 14))
    assert coco.loadCats(8)[0]["name"] == "trousers"
    # Segmentation polygons must rasterise: COCO.annToMask goes through pycocotools' RLE code.
    mask = coco.annToMask(coco.loadAnns(coco.getAnnIds())[0])
    assert mask.shape == (128, 128) and mask.sum() > 0
