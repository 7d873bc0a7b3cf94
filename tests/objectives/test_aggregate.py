import pytest
import torch

from clew.objectives import aggregate

D = torch.float64
# seq1 losses [1, 3] (|o| = 2), seq2 [1, 1, 1, 1] (|o| = 4), padded width 4
LOSS = torch.tensor([[1.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=D)
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=D)


@pytest.mark.parametrize(
    "mode, const, expected",
    [
        ("token_mean", None, 8 / 6),  # (4 + 4) / 6 = 1.3333
        ("seq_mean_token_sum", None, 4.0),  # (4 + 4) / 2
        ("seq_mean_token_mean", None, 1.5),  # (2 + 1) / 2
        ("seq_sum_const", None, 2.0),  # 8 / L with L = 4
        ("seq_sum_const", 8.0, 1.0),  # 8 / 8 (Dr.GRPO with const = B * L_max)
    ],
)
def test_reference_table(mode: str, const: float | None, expected: float) -> None:
    assert aggregate(LOSS, MASK, mode, const=const).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "seq_sum_const"])
def test_episode_weighting_with_one_row_per_episode_equals_row(mode: str) -> None:
    ids = torch.tensor([7, 3])
    assert aggregate(LOSS, MASK, mode, units=ids).item() == pytest.approx(aggregate(LOSS, MASK, mode).item())


@pytest.mark.parametrize("mode", ["seq_mean_token_sum", "seq_mean_token_mean", "token_mean"])
def test_split_rows_with_episode_weighting_equal_the_unsplit_loss(mode: str) -> None:
    """Episode 0 = seq1 split into two rows ([1] and [3]); episode 1 = seq2 whole."""
    whole = torch.tensor([[1.0, 3.0, 0, 0], [1, 1, 1, 1]], dtype=D, requires_grad=True)
    split = torch.tensor([[1.0, 0, 0, 0], [3.0, 0, 0, 0], [1, 1, 1, 1]], dtype=D, requires_grad=True)
    split_mask = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=D)
    a = aggregate(whole, MASK, mode)
    b = aggregate(split, split_mask, mode, units=torch.tensor([0, 0, 1]))
    assert a.item() == pytest.approx(b.item())
    (ga,) = torch.autograd.grad(a, whole)
    (gb,) = torch.autograd.grad(b, split)
    assert ga[0, 0].item() == pytest.approx(gb[0, 0].item())
    assert ga[0, 1].item() == pytest.approx(gb[1, 0].item())
    # row weighting would make the split episode count twice: the turn count leaks in as a weight
    c = aggregate(split, split_mask, mode)
    if mode != "token_mean":
        assert c.item() != pytest.approx(a.item())


def test_bad_mode_and_weighting() -> None:
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match="units: 3 row ids for 2 rows"):
        aggregate(LOSS, MASK, "seq_mean_token_sum", units=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"units: shape \(2, 3\)"):
        aggregate(LOSS, MASK, "seq_mean_token_sum", units=torch.zeros(2, 3, dtype=torch.long))
