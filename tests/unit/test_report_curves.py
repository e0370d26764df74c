"""The report's per-epoch curves hold measured epochs only (no line through unmeasured ones)."""

from __future__ import annotations

from pathlib import Path

from icu_unlearn.report import RunRecord, curve_segments


def _run(epochs: list[dict], before: dict | None) -> RunRecord:
    manifest = {
        "config": {"stop": {"el_n": 10, "el_window": True}},
        "before": before,
        "forget": {"num_samples": 4},
    }
    return RunRecord(Path("run"), manifest, epochs, [])


def test_el_with_gaps_keeps_only_measured_epochs_and_splits_at_each_gap():
    """EL measured before (0.9), at epochs 1, 2, 5 and 6 of 6; the lazy schedule left
    3 and 4 unmeasured (None). Two segments: 0-1-2 and 5-6, so nothing joins 2 to 5."""
    el = {1: 0.5, 2: 0.4, 3: None, 4: None, 5: 0.1, 6: 0.0}
    epochs = [
        {"epoch": e, "el": v, "ma": 0.9 - 0.1 * e, "active": 4 - e // 2} for e, v in el.items()
    ]
    run = _run(epochs, {"el_10": 0.9, "ma": 1.0})
    assert curve_segments(run, "EL") == [[(0, 0.9), (1, 0.5), (2, 0.4)], [(5, 0.1), (6, 0.0)]]
    measured = {e for segment in curve_segments(run, "EL") for e, _ in segment}
    assert measured == {0, 1, 2, 5, 6}  # never 3 or 4
    # MA is measured every epoch: one segment from the before value on
    (ma,) = curve_segments(run, "ma")
    assert [e for e, _ in ma] == list(range(7)) and ma[0] == (0, 1.0)
    # the active count starts at the forget set's size
    assert curve_segments(run, "active")[0][:2] == [(0, 4), (1, 4)]


def test_a_lone_measured_epoch_and_missing_rows_are_their_own_segments():
    """EL only at the last epoch (4), no before summary, and epoch 2's row missing from the log:
    a single point; BERTScore never measured: no segment at all."""
    epochs = [{"epoch": e, "el": 0.2 if e == 4 else None} for e in (1, 3, 4)]
    run = _run(epochs, None)
    assert curve_segments(run, "EL") == [[(4, 0.2)]]
    assert curve_segments(run, "bertscore_f1") == []
    ma = _run([{"epoch": e, "ma": 0.5} for e in (1, 3, 4)], None)
    assert curve_segments(ma, "ma") == [[(1, 0.5)], [(3, 0.5), (4, 0.5)]]
