"""Bits/dim of the independent-pixels baseline against a computation by hand, standard error included."""
import math
import statistics

import torch

from genzoo.evaluate import independent_pixel_bpd


def test_independent_pixels_baseline_matches_a_count_by_hand_with_its_standard_error():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 3, (20, 1, 2, 2), generator=g)
    test = torch.randint(0, 3, (7, 1, 2, 2), generator=g)
    per_image = []
    for x in test.reshape(7, 4).tolist():
        bits = 0.0
        for i, level in enumerate(x):
            count = sum(1 for y in train.reshape(20, 4).tolist() if y[i] == level)
            bits -= math.log2((count + 1) / (20 + 3))  # add-one counts over 3 levels
        per_image.append(bits / 4)
    result = independent_pixel_bpd(train, test, levels=3)
    assert result.kind == "exact"
    assert math.isclose(result.value, statistics.mean(per_image), rel_tol=1e-12)
    assert math.isclose(result.se, statistics.stdev(per_image) / math.sqrt(7), rel_tol=1e-9)
