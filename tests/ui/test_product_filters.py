"""The product page's filters: in stock only, and one item per product family."""

from __future__ import annotations

import re

import numpy as np
from sqlalchemy import text

from tests.recommendations.helpers import add_item


def _shown(html: str) -> list[str]:
    """SKUs linked from the look-alike row, in page order."""
    row = html[html.index("Look-alikes") :]
    return list(dict.fromkeys(re.findall(r'href="/items/(P\d+)"', row)))


def test_product_page_filters_in_stock_and_one_per_family(client, db_session) -> None:
    from workers.search.index import reset_index
    from workers.tasks.lists import fold_lists

    # P00's nearest are P01, P02, ... in order; styles come in runs of three variants.
    for i in range(12):
        add_item(db_session, f"P{i:02d}", {"full": np.array([i, 0, 0], np.float32)})
        attributes = f'{{"style": "S{i // 3}", "in_stock": {"true" if i % 2 else "false"}}}'
        db_session.execute(
            text("UPDATE items SET attributes = CAST(:a AS jsonb) WHERE sku = :sku"),
            {"a": attributes, "sku": f"P{i:02d}"},
        )
    db_session.commit()
    reset_index()
    fold_lists.run(reason="test")
    plain = client.get("/items/P00").get_data(as_text=True)
    assert "In stock only" in plain and "One per style" in plain
    assert _shown(plain)[:4] == ["P01", "P02", "P03", "P04"]
    in_stock = client.get("/items/P00?in_stock=1").get_data(as_text=True)
    assert _shown(in_stock)[:4] == ["P01", "P03", "P05", "P07"]
    assert 'name="in_stock" value="1" checked' in in_stock
    families = client.get("/items/P00?one_per_family=1").get_data(as_text=True)
    # P01 and P02 share P00's style S0: the nearest of it (P01) stands for it.
    assert _shown(families)[:4] == ["P01", "P03", "P06", "P09"]
    both = client.get("/items/P00?one_per_family=1&in_stock=1").get_data(as_text=True)
    assert _shown(both)[:4] == ["P01", "P03", "P07", "P09"]
