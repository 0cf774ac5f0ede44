"""The simulated universe looks like the venue's: slugs a user can type in a shell."""

from __future__ import annotations

import re

from polybus.sim.universe import build_universe


def test_every_slug_is_lower_case_letters_digits_and_single_hyphens() -> None:
    universe = build_universe(
        seed=7, binary_markets=200, neg_risk_events=20, outcomes_per_event=5, min_order_size=5
    )
    slugs = [market.slug for market in universe.markets]
    assert len(set(slugs)) == len(slugs)
    bad = [slug for slug in slugs if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug)]
    assert bad == []
