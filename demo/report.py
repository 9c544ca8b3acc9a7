"""What the demo prints about the recommendations it got."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from demo.catalogue import describe
from demo.phases import say
from demo.scoring import KindScore, is_relevant
from shared.vocabulary import VectorKind

KIND_TITLES = {
    VectorKind.TOP: "tops like its top",
    VectorKind.BOTTOM: "bottoms like its bottom",
    VectorKind.FULL: "look-alikes (whole photo)",
}


def print_item(sku: str, document: Mapping[str, Any], labels: Mapping[str, Any], k: int) -> None:
    label = labels[sku]
    top, bottom = label.get(VectorKind.TOP), label.get(VectorKind.BOTTOM)
    say(f"\n   {sku}: top {describe(top)}, bottom {describe(bottom)}")
    missing = document.get("missing") or {}
    for kind, title in KIND_TITLES.items():
        hits = (document.get("results") or {}).get(kind) or []
        if not hits:
            say(f"     {title}: none ({missing.get(kind, 'no results')})")
            continue
        say(f"     {title}:")
        for hit in hits[:k]:
            other = labels.get(hit["sku"], {})
            mark = "+" if other and is_relevant(kind, label, other) else " "
            garment = VectorKind.BOTTOM if kind == VectorKind.BOTTOM else VectorKind.TOP
            shown = other.get(garment) if other else None
            say(f"       {mark} {hit['sku']}  d={hit['distance']:.3f}  {describe(shown)}")


def print_filtered(
    sku: str,
    plain: Mapping[str, Any],
    filtered: Mapping[str, Any],
    attributes: Mapping[str, Mapping[str, Any]],
    k: int,
) -> None:
    """One product's look-alikes as they are, then in stock and one per style (the filters a
    shop puts on its product page), each hit with the attributes the filters read."""

    def hits(document: Mapping[str, Any]) -> str:
        shown = []
        for hit in ((document.get("results") or {}).get("full") or [])[:k]:
            own = attributes.get(hit["sku"], {})
            stock = "in stock" if own.get("in_stock") else "sold out"
            shown.append(f"{hit['sku']} ({own.get('style', '-')}, {stock})")
        return ", ".join(shown) or "none"

    own = attributes.get(sku, {})
    say(f"\n   filters on {sku} (style {own.get('style', '-')}), look-alikes:")
    say(f"     as they are:               {hits(plain)}")
    say(f"     in stock, one per style:   {hits(filtered)}")


def print_scores(scores: Sequence[KindScore | None], k: int) -> None:
    say(f"\n   precision@{k} (relevant = same garment type and colour; '+' above)")
    say(
        f"   {'kind':<8}{'queries':>8}{'measured':>10}{'ceiling':>10}{'of ceiling':>12}"
        f"{'chance':>9}"
    )
    for score in scores:
        if score is None:
            continue
        share = f"{score.precision / score.ceiling:.0%}" if score.ceiling else "-"
        say(
            f"   {score.kind:<8}{score.queries:>8}{score.precision:>10.3f}"
            f"{score.ceiling:>10.3f}{share:>12}{score.chance:>9.3f}"
        )
    say(
        "   ceiling: the best any ranking could score here (few items share type and colour);"
        "\n   of ceiling: measured / ceiling; chance: the expected score of a random ranking."
    )
