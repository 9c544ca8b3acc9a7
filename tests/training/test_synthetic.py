"""Synthetic datasets: deterministic, in the real datasets' layouts, boxes inside the images."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from training import synthetic

LANDMARK_COUNTS = [25, 33, 31, 39, 15, 15, 10, 14, 8, 29, 37, 19, 19]
BOTTOMS = {"shorts", "trousers", "skirt"}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def read_table(path: Path) -> tuple[str, list[list[str]]]:
    """DeepFashion list file: count line, header line, whitespace-separated rows."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split() for line in lines[2:]]
    assert int(lines[0]) == len(rows)
    return lines[1], rows


def assert_box_inside(box: list[int], width: int, height: int) -> None:
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 < width and 0 <= y1 < y2 < height


@pytest.mark.parametrize("writer", ["deepfashion2", "deepfashion", "inshop", "catalogue"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, writer: str) -> None:
    def write(out: Path, seed: int) -> None:
        if writer == "catalogue":
            synthetic.make_catalogue(out, count=4, seed=seed, size=96)
        else:
            write_fn = getattr(synthetic, f"write_{writer}")
            write_fn(out, 4, size=96, seed=seed)

    write(tmp_path / "a", 1)
    write(tmp_path / "b", 1)
    write(tmp_path / "c", 2)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")


def test_library_samples_are_deterministic() -> None:
    image_a, anno_a = synthetic.make_deepfashion2_sample(seed=7, index=3, size=96)
    image_b, anno_b = synthetic.make_deepfashion2_sample(seed=7, index=3, size=96)
    assert anno_a == anno_b
    assert image_a.tobytes() == image_b.tobytes()


def test_deepfashion2_layout(tmp_path: Path) -> None:
    paths = synthetic.write_deepfashion2(tmp_path, count=30, size=128, seed=4)
    assert [p.name for p in paths] == [f"{i:06d}.json" for i in range(1, 31)]
    groups = Counter()
    for path in paths:
        with Image.open(tmp_path / "image" / f"{path.stem}.jpg") as image:
            assert image.size == (128, 128)
        data = json.loads(path.read_text())
        assert data["source"] in ("user", "shop") and isinstance(data["pair_id"], int)
        items = [key for key in data if key not in ("source", "pair_id")]
        assert items == [f"item{n}" for n in range(1, len(items) + 1)]
        assert 1 <= len(items) <= 2
        for key in items:
            item = data[key]
            category = item["category_id"]
            assert synthetic.CATEGORY_NAMES[category - 1] == item["category_name"]
            groups["bottom" if item["category_name"] in BOTTOMS else "top"] += 1
            assert len(item["landmarks"]) == 3 * LANDMARK_COUNTS[category - 1]
            assert set(item["landmarks"][2::3]) <= {0, 1, 2}
            assert_box_inside(item["bounding_box"], 128, 128)
            # Tight: the box is exactly the extent of the segmentation polygons.
            xs = [x for polygon in item["segmentation"] for x in polygon[0::2]]
            ys = [y for polygon in item["segmentation"] for y in polygon[1::2]]
            assert item["bounding_box"] == [min(xs), min(ys), max(xs), max(ys)]
            assert all(
                len(polygon) >= 6 and len(polygon) % 2 == 0 for polygon in item["segmentation"]
            )
            for field in ("style", "scale", "occlusion", "zoom_in", "viewpoint"):
                assert isinstance(item[field], int)
    assert groups["top"] > 0 and groups["bottom"] > 0


def test_garments_are_drawn_inside_their_boxes() -> None:
    image, annotation = synthetic.make_deepfashion2_sample(seed=0, index=1, size=128)
    pixels = image.load()
    background = pixels[0, 0]
    boxes = [item["bounding_box"] for key, item in annotation.items() if key.startswith("item")]
    for x in range(0, 128, 4):
        for y in range(0, 128, 4):
            inside = any(
                x1 - 2 <= x <= x2 + 2 and y1 - 2 <= y <= y2 + 2 for x1, y1, x2, y2 in boxes
            )
            if not inside:
                assert max(abs(a - b) for a, b in zip(pixels[x, y], background, strict=True)) < 12


def test_open_front_outerwear_has_two_polygons() -> None:
    assert len(synthetic.unit_polygons(4)) == 2
    assert len(synthetic.unit_polygons(2)) == 1


def test_deepfashion_layout(tmp_path: Path) -> None:
    records = synthetic.write_deepfashion(tmp_path, count=40, size=128, seed=2)
    header, rows = read_table(tmp_path / "Anno" / "list_category_img.txt")
    assert header == "image_name  category_label"
    assert [(name, int(label)) for name, label in rows] == [
        (r.image_name, r.label) for r in records
    ]
    assert all(1 <= r.label <= 46 for r in records)

    header, boxes = read_table(tmp_path / "Anno" / "list_bbox.txt")
    assert header == "image_name  x_1  y_1  x_2  y_2"
    for name, *box in boxes:
        with Image.open(tmp_path / name) as image:
            assert_box_inside([int(v) for v in box], *image.size)
        assert name.startswith("img/") and "/img_" in name

    header, categories = read_table(tmp_path / "Anno" / "list_category_cloth.txt")
    assert header == "category_name  category_type"
    assert len(categories) == 50
    assert categories[0] == ["Anorak", "1"] and categories[17] == ["Tee", "1"]
    assert categories[32] == ["Skirt", "2"] and categories[40] == ["Dress", "3"]

    header, partitions = read_table(tmp_path / "Eval" / "list_eval_partition.txt")
    assert header == "image_name  evaluation_status"
    assert Counter(status for _, status in partitions) == {"train": 28, "val": 6, "test": 6}


def test_inshop_layout(tmp_path: Path) -> None:
    records = synthetic.write_inshop(tmp_path, items=10, size=96, seed=3)
    header, rows = read_table(tmp_path / "Eval" / "list_eval_partition.txt")
    assert header == "image_name  item_id  evaluation_status"
    by_item: dict[str, list[str]] = defaultdict(list)
    for name, item_id, status in rows:
        assert (tmp_path / name).is_file() and f"/{item_id}/" in name
        by_item[item_id].append(status)
    assert len(by_item) == 10 and len(rows) == len(records)
    statuses = {tuple(sorted(set(s))) for s in by_item.values()}
    assert statuses == {("train",), ("gallery", "query")}
    for status_list in by_item.values():
        assert len(status_list) >= 2
        if "query" in status_list:
            assert status_list.count("query") == 1
    # Every photo of one item shows the same garment.
    specs = defaultdict(set)
    for record in records:
        specs[record.item_id].add(record.spec)
    assert all(len(s) == 1 for s in specs.values())


def test_catalogue(tmp_path: Path) -> None:
    labels = synthetic.make_catalogue(tmp_path, count=20, seed=5, size=128)
    assert json.loads((tmp_path / "labels.json").read_text()) == labels
    assert sorted(p.stem for p in tmp_path.glob("*.jpg")) == sorted(labels)
    for label in labels.values():
        assert label["top"] or label["bottom"]
        if label["top"]:
            assert label["top"]["category"] in synthetic.CATEGORY_NAMES
            assert label["top"]["category"] not in BOTTOMS
            assert label["top"]["colour"] in synthetic.PALETTE
        if label["bottom"]:
            assert label["bottom"]["category"] in BOTTOMS
    assert sum(1 for label in labels.values() if label["top"] and label["bottom"]) >= 5


def test_cli_writes_each_layout(tmp_path: Path) -> None:
    for command in ("deepfashion2", "deepfashion", "inshop", "catalogue"):
        out = tmp_path / command
        assert synthetic.main([command, "--out", str(out), "--count", "3", "--size", "96"]) == 0
        assert any(out.rglob("*.jpg"))
    assert len(list((tmp_path / "deepfashion2" / "annos").glob("*.json"))) == 3


def test_catalogue_styles_come_in_colour_variants_with_shop_attributes(tmp_path: Path) -> None:
    labels = synthetic.make_catalogue(tmp_path, count=9, seed=3, size=96)
    attributes = json.loads((tmp_path / synthetic.ATTRIBUTES).read_text())
    assert sorted(attributes) == sorted(labels)
    styles = defaultdict(list)
    for sku in sorted(labels):
        styles[attributes[sku]["style"]].append(sku)
    assert [len(v) for v in styles.values()] == [synthetic.VARIANTS_PER_STYLE] * 3
    for skus in styles.values():
        shown = [labels[sku] for sku in skus]
        # One cut in other colours: the same garments, never the same colour twice.
        for part in ("top", "bottom"):
            assert len({(s[part] or {}).get("category") for s in shown}) == 1
            colours = [s[part]["colour"] for s in shown if s[part]]
            assert len(set(colours)) == len(colours)
        prices = [attributes[sku]["price"] for sku in skus]
        assert max(prices) <= 1.11 * min(prices)
    assert all(isinstance(a["in_stock"], bool) for a in attributes.values())
    # The first variant of each style is the style's plain catalogue sample.
    _, label = synthetic.make_catalogue_sample(3, 2, 96)
    assert labels["SKU00004"] == label
