"""Fixtures of the front ends' tests (tests/frontends/test_api.py and test_demo.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import _sample


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Return two image files of odd sizes: an RGB PNG and an RGBA PNG (alpha to drop)."""
    folder = tmp_path_factory.mktemp("api_images")
    rng = np.random.default_rng(5)
    first, second = folder / "a.png", folder / "b.png"
    Image.fromarray(_sample(rng, 41, 57)[0]).save(first)
    Image.fromarray(_sample(rng, 50, 38)[0]).convert("RGBA").save(second)
    return [first, second]
