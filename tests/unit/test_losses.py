"""Each loss term against numbers worked out by hand on a fixed tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from icu_unlearn.losses import (
    calibrated_loss,
    forget_loss,
    icu_loss,
    kl_loss,
    nll_loss,
    positions_needed,
    prefix_level_loss,
    reference_kl_loss,
    suffix_logprob_sum,
    suffix_mask,
)


def _batch():
    """Two sequences over a 3-token vocabulary, the second right-padded by one.

    Logits are zero except where noted, so each softmax is easy to write down:
    a row with logits (ln 2, 0, 0) gives P = (1/2, 1/4, 1/4).
    """
    input_ids = torch.tensor([[0, 1, 2, 0], [2, 0, 1, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    logits = torch.zeros(2, 4, 3)
    logits[0, 1, 2] = math.log(2)  # P(x_2 = 2 | x_<2) = 1/2 for sequence 0
    logits[0, 2, 0] = math.log(2)  # P(x_3 = 0 | x_<3) = 1/2
    logits[1, 1, 1] = math.log(2)  # P(x_2 = 1 | x_<2) = 1/2 for sequence 1
    logits[1, 2, 1] = 50.0  # the padded position: must not count anywhere
    prefix_lengths = torch.tensor([2, 2])
    return logits, input_ids, attention_mask, prefix_lengths


def test_suffix_mask_covers_t_ge_t0_without_padding():
    _, _, attention_mask, prefix_lengths = _batch()
    mask = suffix_mask(attention_mask, prefix_lengths)
    # predicted tokens t = 1, 2, 3; t0 = 2; sequence 1 has t = 3 padded
    assert mask.tolist() == [[0, 1, 1], [0, 1, 0]]


def test_forget_and_learn_losses_hand_worked():
    """Sequence 0: suffix tokens t=2,3 each have P = 1/2 -> mean log P = ln(1/2).
    Sequence 1: suffix token t=2 has P = 1/2 (t=3 is padding) -> ln(1/2).
    L_fgt (Eq. 1) = mean over samples = ln(1/2) = -0.6931; L_lrn (Eq. 3) = +0.6931."""
    logits, ids, mask, t0 = _batch()
    assert forget_loss(logits, ids, mask, t0).item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert nll_loss(logits, ids, mask, t0).item() == pytest.approx(math.log(2), abs=1e-6)


def test_the_last_positions_alone_give_the_same_losses():
    """t0 = 2 in a 4-token batch: positions 1..3 (K = 4 - 2 + 1 = 3) predict every suffix
    token, so logits[:, 1:] give the same hand-worked ln(1/2), 0.0566 and the sum 2 ln(1/2)
    + ln(1/2) over the two samples; K = 2 would miss x_2 and is refused."""
    logits, ids, mask, t0 = _batch()
    assert positions_needed(t0, 4) == 3
    kept = logits[:, 1:]
    assert forget_loss(kept, ids, mask, t0).item() == pytest.approx(math.log(0.5), abs=1e-6)
    kl_row = (math.log(2 / 3) + 2 * math.log(4 / 3)) / 3
    assert kl_loss(kept, torch.zeros_like(kept), mask, t0).item() == pytest.approx(kl_row, abs=1e-6)
    sums = suffix_logprob_sum(kept, ids, mask, t0)
    assert sums.tolist() == pytest.approx([2 * math.log(0.5), math.log(0.5)], abs=1e-6)
    with pytest.raises(ValueError, match="keep 3"):
        forget_loss(logits[:, 2:], ids, mask, t0)


def test_per_sample_mean_weights_samples_equally():
    """Sequence 0 with t0 = 1 adds t=1 with P = 1/3: its mean is (ln 1/3 + 2 ln 1/2) / 3;
    sequence 1 stays ln 1/2; L_fgt is the mean of the two per-sample means."""
    logits, ids, mask, _ = _batch()
    expected = ((math.log(1 / 3) + 2 * math.log(0.5)) / 3 + math.log(0.5)) / 2
    got = forget_loss(logits, ids, mask, torch.tensor([1, 2])).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_a_floored_token_is_held_at_its_floor():
    """Floors per predicted token x_1..x_3; every suffix token here has P = 1/2
    (ln = -0.693). Sequence 0: x_2's floor -0.5 is above it (|-0.693 + 0.5| = 0.193),
    x_3's floor -1 below it (0.307): mean 0.25. Sequence 1: x_2 unfloored (-inf), the
    plain ln(1/2). L_fgt is the mean of the two. Below its floor a token is pulled up
    (its gradient is ascent's, negated); above it, pushed down as by ascent; -inf
    everywhere is no floor."""
    logits, ids, mask, t0 = _batch()
    inf = math.inf
    floor = torch.tensor([[-inf, -0.5, -1.0], [-inf, -inf, -inf]])
    got = forget_loss(logits.requires_grad_(True), ids, mask, t0, floor=floor)
    assert got.item() == pytest.approx((0.25 + math.log(0.5)) / 2, abs=1e-6)
    (grad,) = torch.autograd.grad(got, logits)
    (ascent,) = torch.autograd.grad(forget_loss(logits, ids, mask, t0), logits)
    torch.testing.assert_close(grad[0, 1], -ascent[0, 1])  # x_2: under its floor, back up
    torch.testing.assert_close(grad[0, 2], ascent[0, 2])  # x_3: above it, down as ascent
    torch.testing.assert_close(grad[1], ascent[1])  # no floor
    kept = logits.detach()[:, 1:]  # the suffix positions alone, the same floor
    assert forget_loss(kept, ids, mask, t0, floor=floor).item() == pytest.approx(got.item())
    unbounded = forget_loss(logits, ids, mask, t0, floor=torch.full((2, 3), -inf))
    assert unbounded.item() == pytest.approx(forget_loss(logits, ids, mask, t0).item())


def test_kl_hand_worked_and_ignores_padding():
    """Reference logits zero (uniform P0 = 1/3 each). Where the model has (ln 2, 0, 0)
    up to order, P = (1/2, 1/4, 1/4) and KL(P0 || P) = sum 1/3 ln((1/3)/p)
    = 1/3 (ln(2/3) + 2 ln(4/3)) = 0.0566; where the model is uniform, KL = 0.
    Sequence 0, positions t=2,3: both rows have a ln 2 entry -> mean 0.0566.
    Sequence 1, position t=2: ln 2 entry -> 0.0566; t=3 is padding (logit 50) and must
    not count. L_kl = 0.0566."""
    logits, ids, mask, t0 = _batch()
    kl_row = (math.log(2 / 3) + 2 * math.log(4 / 3)) / 3
    reference = torch.zeros_like(logits)
    assert kl_loss(logits, reference, mask, t0).item() == pytest.approx(kl_row, abs=1e-6)
    # changing the padded position's logits changes nothing
    logits[1, 2] = torch.tensor([-9.0, 9.0, 3.0])
    assert kl_loss(logits, reference, mask, t0).item() == pytest.approx(kl_row, abs=1e-6)
    assert kl_loss(reference, reference, mask, t0).item() == pytest.approx(0.0, abs=1e-7)


def test_icu_loss_is_eq_6():
    total = icu_loss(torch.tensor(-2.0), torch.tensor(3.0), torch.tensor(0.5), 0.5, 1.0)
    assert total.item() == pytest.approx(-2.0 + 1.5 + 0.5)


def test_reference_kl_loss_by_hand():
    """t0 = 2: sequence 0 scores x_2 (position 1) and x_3 (position 2); sequence 1 only
    x_2 (x_3 is padding). The model's P at position 1 of sequence 0 is (1/4, 1/4, 1/2),
    at position 2 (1/2, 1/4, 1/4); every other predicting position is uniform.

    The reference's log-probabilities: uniform at sequence 0's position 1, so
    KL(U || P) = sum_v 1/3 (ln 1/3 - ln P_v) = ln(1/3) - (2 ln(1/4) + ln(1/2)) / 3
               = -ln 3 + (5/3) ln 2;
    equal to the model's at position 2: KL 0; at sequence 1's position 1, the model's
    P = (1/4, 1/2, 1/4) against the reference's (1/2, 1/4, 1/4):
    KL = 1/2 ln 2 + 1/4 ln(1/2) + 0 = (1/4) ln 2.
    Masked positions (prefix, padding) hold anything: here 7.0 before normalising.
    Loss = mean over samples of each sample's mean: ((-ln 3 + 5/3 ln 2) / 2 + ln 2 / 4) / 2.
    """
    logits, input_ids, attention_mask, prefix_lengths = _batch()
    reference = torch.full((2, 4, 3), 7.0)
    reference[0, 1] = torch.log(torch.full((3,), 1 / 3))
    reference[0, 2] = torch.log_softmax(logits[0, 2], -1)
    reference[1, 1] = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    loss = reference_kl_loss(logits, reference, attention_mask, prefix_lengths)
    first = (-math.log(3) + 5 / 3 * math.log(2)) / 2
    assert loss.item() == pytest.approx((first + math.log(2) / 4) / 2, abs=1e-6)
    # at the reference's distributions everywhere it counts, the loss is 0
    assert reference_kl_loss(
        torch.log_softmax(logits, -1), torch.log_softmax(logits, -1), attention_mask, prefix_lengths
    ).item() == pytest.approx(0.0, abs=1e-7)


def test_calibrated_loss_by_hand():
    """Sequence 0's suffix NLL: (ln 2 + ln 2) / 2 = ln 2 (both scored tokens at P = 1/2);
    sequence 1's: ln 2 (x_2 = 1 at P = 1/2). Level 1.0 and 0.5 nats a token: both within a
    nat, so the Huber distance is (ln 2 - 1)^2 / 2 and (ln 2 - 0.5)^2 / 2, averaged; a
    level 3 nats away counts |ln 2 - 3.5| - 1/2. The gradient ascends sample 0 (below its
    level's NLL, too likely) and descends sample 1 (already less likely than its level)."""
    logits, input_ids, attention_mask, prefix_lengths = _batch()
    logits = logits.clone().requires_grad_(True)
    level = torch.tensor([1.0, 0.5])
    loss = calibrated_loss(logits, input_ids, attention_mask, prefix_lengths, level)
    ln2 = math.log(2)
    assert loss.item() == pytest.approx(((ln2 - 1) ** 2 / 2 + (ln2 - 0.5) ** 2 / 2) / 2, abs=1e-6)
    far = calibrated_loss(
        logits, input_ids, attention_mask, prefix_lengths, torch.tensor([3.5] * 2)
    )
    assert far.item() == pytest.approx(3.5 - ln2 - 0.5, abs=1e-6)
    loss.backward()
    # d loss / d logit of the true token x_2 = 2 at position 1: sample 0 is pushed down
    # (its likelihood lowered: gradient > 0 on the true logit), sample 1 pulled up
    assert logits.grad[0, 1, 2] > 0 and logits.grad[1, 1, 1] < 0


def test_prefix_level_loss_by_hand():
    """t0 = 2: the prefix scores x_1 alone (position 0), uniform for both sequences (every
    logit 0), so each prefix NLL is ln 3 whatever the suffix holds. Levels 1.0 and 1.5:
    within a nat, Huber (ln 3 - 1)^2 / 2 and (ln 3 - 1.5)^2 / 2, averaged. Sample 0's x_1
    is less likely than its level (NLL ln 3 > 1) and is pulled up; sample 1's is likelier
    than its level (ln 3 < 1.5) and is pushed down; the suffix takes no gradient."""
    logits, input_ids, attention_mask, prefix_lengths = _batch()
    logits = logits.clone().requires_grad_(True)
    loss = prefix_level_loss(
        logits, input_ids, attention_mask, prefix_lengths, torch.tensor([1.0, 1.5])
    )
    ln3 = math.log(3)
    assert loss.item() == pytest.approx(((ln3 - 1) ** 2 / 2 + (ln3 - 1.5) ** 2 / 2) / 2, abs=1e-6)
    loss.backward()
    # a negative gradient on a true logit makes that token likelier
    assert logits.grad[0, 0, 1] < 0 and logits.grad[1, 0, 0] > 0
    assert torch.all(logits.grad[:, 1:] == 0)
    with pytest.raises(ValueError, match="every position"):
        prefix_level_loss(logits[:, 1:], input_ids, attention_mask, prefix_lengths,
                          torch.tensor([1.0, 1.5]))  # fmt: skip
