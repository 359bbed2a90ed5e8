"""The soak's memory verdict (bench/soak_figures.py): slopes, the warm-up cut, the per-node cost and the RSS slope
corrected for registry growth."""

from __future__ import annotations

import pytest
from bench.soak_figures import after_warmup, memory_verdict, node_cost_mib, per_minute, slope


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    assert slope([5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert slope([0.0, 2.0, 1.0, 3.0]) == pytest.approx(0.8)  # noisy: not last minus first over steps (1.0)
    assert slope([7.0]) is None and slope([]) is None


def test_per_minute_scales_by_the_interval() -> None:
    assert per_minute([0.0, 1.0, 2.0], 30.0) == pytest.approx(2.0)
    assert per_minute([0.0, 1.0, 2.0], 60.0) == pytest.approx(1.0)


def test_the_warm_up_cut_starts_at_the_sample_taken_as_it_ends() -> None:
    samples = [float(i) for i in range(1, 11)]  # taken at the end of minutes 1..10
    assert after_warmup(samples, 2, 60.0) == samples[1:]  # from the end of minute 2
    assert after_warmup(samples, 2, 30.0) == samples[3:]  # four half-minute samples make the warm-up
    assert after_warmup(samples, 0, 60.0) == samples


def test_node_cost_is_growth_per_node_added() -> None:
    assert node_cost_mib(100.0, 110.0, 200) == pytest.approx(0.05)
    assert node_cost_mib(100.0, 99.0, 200) == 0.0  # RSS fell: the nodes cost nothing measurable
    assert node_cost_mib(100.0, 110.0, 0) is None


def test_the_verdict_subtracts_what_the_registry_legitimately_grows_by() -> None:
    minutes = range(10)
    nodes = [20 + 2 * m for m in minutes]  # the flood adds two nodes a minute
    rss = [80.0 + 5.0 * (m == 0) + 0.6 * m for m in minutes]  # a warm-up jump, then 0.6 MiB/min
    verdict = memory_verdict(rss, nodes, interval_s=60.0, warmup_min=2, node_cost=0.25, flat_mib_per_min=0.5)
    assert verdict["router_rss_slope_after_warmup_mib_per_min"] == pytest.approx(0.6)
    assert verdict["registry_growth_nodes_per_min"] == pytest.approx(2.0)
    assert verdict["router_rss_slope_corrected_mib_per_min"] == pytest.approx(0.1)  # 0.6 - 0.25 * 2
    assert verdict["router_rss_slope_mib_per_min"] < 0.6  # the warm-up jump skews the raw fit over all minutes
    assert verdict["verdict_slope"] == "corrected" and verdict["flat_memory"] is True


def test_growth_beyond_the_registry_fails_the_verdict() -> None:
    nodes = [20] * 10  # no registry growth: nothing to subtract
    rss = [80.0 + 0.8 * m for m in range(10)]
    verdict = memory_verdict(rss, nodes, interval_s=60.0, warmup_min=2, node_cost=0.25, flat_mib_per_min=0.5)
    assert verdict["router_rss_slope_corrected_mib_per_min"] == pytest.approx(0.8)
    assert verdict["flat_memory"] is False


def test_without_a_node_cost_the_verdict_is_the_raw_slope_after_warm_up() -> None:
    rss = [80.0 + 0.3 * m for m in range(10)]
    verdict = memory_verdict(rss, [20] * 10, interval_s=60.0, warmup_min=2, node_cost=None, flat_mib_per_min=0.5)
    assert verdict["router_rss_slope_corrected_mib_per_min"] is None
    assert verdict["verdict_slope"] == "after_warmup" and verdict["flat_memory"] is True


def test_too_short_a_run_gives_no_verdict() -> None:
    verdict = memory_verdict([80.0, 81.0], [20, 22], interval_s=60.0, warmup_min=2, node_cost=0.1, flat_mib_per_min=0.5)
    assert verdict["router_rss_slope_after_warmup_mib_per_min"] is None and verdict["flat_memory"] is None
