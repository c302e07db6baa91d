import math

import pandas as pd
import pytest

from sim import Scenario, confidence_table, replicate_scenarios
from sim.replications import replication_seeds, t95


def test_seeds_are_distinct_reproducible_and_start_with_the_scenario_seed():
    a = replication_seeds(42, 5)
    assert a == replication_seeds(42, 5) and a[0] == 42 and len(set(a)) == 5
    assert replication_seeds(43, 5)[1:] != a[1:]
    scs = replicate_scenarios(Scenario(), 3)
    assert [s.seed for s in scs] == replication_seeds(Scenario().seed, 3)
    assert all(s.clients == Scenario().clients for s in scs)


def test_confidence_table_is_student_t():
    df = pd.DataFrame({"transport": ["a"] * 4, "seed": [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 4.0]})
    row = confidence_table(df).set_index("metric").loc["x"]
    sd = pd.Series([1.0, 2.0, 3.0, 4.0]).std(ddof=1)
    assert row["mean"] == 2.5
    assert row["ci95_half_width"] == pytest.approx(3.182 * sd / math.sqrt(4))
    assert "seed" not in set(confidence_table(df)["metric"])
    assert t95(200) == 1.96
