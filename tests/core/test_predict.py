"""core/predict.py: warm_owners (the scheduler's, once per request) agrees with is_warm (per endpoint)."""

from __future__ import annotations

import itertools

from aigrid.core.predict import is_warm, warm_owners
from aigrid.core.types import RequestInfo
from tests.core.grid import endpoint


def test_warm_owners_agrees_with_is_warm() -> None:
    eps = [endpoint("fra"), endpoint("iad")]
    owners = [{}, {"p": eps[0].id}, {"s": eps[1].id}, {"p": eps[0].id, "s": eps[1].id}, {"p": "elsewhere"}]
    for prefix, session, owner in itertools.product([None, "p", "x"], [None, "s", "y"], owners):
        request = RequestInfo("r", "small", 100, prefix_hash=prefix, session=session)
        for ep in eps:
            assert (ep.id in warm_owners(request, owner)) == is_warm(request, ep, owner)
