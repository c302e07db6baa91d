"""The calibration's split of a write's CPU into its own part and the group commit's
(reference_server.loadgen.calibrate.split_commit): arithmetic only, no timing."""

import pytest

from reference_server.loadgen.calibrate import GROUP, split_commit


def test_sixteen_writes_per_commit():
    # w = 0.1 ms, B = 1.6 ms: alone 1.7 ms, sixteen at a time 0.1 + 1.6/16 = 0.2 ms
    batch, own = split_commit(1.7, 0.2, 1 / 16)
    assert batch == pytest.approx(1.6) and own == pytest.approx(0.1)
    assert (1.7 - 0.2) * 16 / 15 == pytest.approx(batch)  # the B = (c1 - c16) * 16/15 of docs/MODEL.md


def test_the_share_the_server_counted():
    # 2 commits per write alone, 0.25 per write together: each write paid 1/8 of its commits
    batch, own = split_commit(1.0, 0.3, 0.25 / 2)
    assert batch == pytest.approx(0.8) and own == pytest.approx(0.2)
    assert own + batch * 0.125 == pytest.approx(0.3)


def test_noise_never_gives_a_negative_cost():
    assert split_commit(0.5, 0.6, 1 / GROUP) == (0.0, 0.5)  # together cost more: no measurable commit
    batch, own = split_commit(0.5, 0.0, 1 / GROUP)
    assert batch == 0.5 and own == 0.0  # never more than the write cost alone


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1])
def test_writes_that_shared_nothing_cannot_be_split(share):
    with pytest.raises(ValueError, match="share="):
        split_commit(1.0, 0.5, share)
