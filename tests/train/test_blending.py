"""Adaptive gradient blending on hand-made loss curves."""
from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.blending import GradientBlender, plot_weights  # noqa: E402


def curves(n_points: int = 20):
    """Two branches measured every N steps:

    - "overfit": at first its training and validation losses fall fast together; from point
      6 on its training loss keeps falling while its validation loss rises (memorising);
    - "general": training and validation losses fall together, slowly, to the end (the gap
      grows a little).
    """
    for i in range(n_points):
        if i < 6:
            overfit_train, overfit_val = 1.9 - 0.15 * i, 2.0 - 0.15 * i
        else:
            overfit_train = max(0.05, 1.0 - 0.1 * (i - 6))
            overfit_val = 1.1 + 0.03 * (i - 6) ** 1.5
        general_train = 1.8 * math.exp(-i / 12.0)
        general_val = general_train + 0.1 + 0.01 * i
        yield ({"overfit": overfit_train, "general": general_train},
               {"overfit": overfit_val, "general": general_val})


def test_weight_formula_by_hand():
    blender = GradientBlender(["a", "b"], window=1, every=10)
    assert blender.weights == {"a": 0.5, "b": 0.5}
    # first measurement sets the references only
    assert blender.update(10, {"a": 1.0, "b": 1.0}, {"a": 1.2, "b": 1.2}) == \
        {"a": 0.5, "b": 0.5}
    # a: train 1.0 -> 0.6, val 1.2 -> 1.0: G = 0.2, O = 0.4 - 0.2 = 0.2, w ∝ 0.2 / 0.04 = 5
    # b: train 1.0 -> 0.9, val 1.2 -> 1.1: G = 0.1, O = 0.1 - 0.1 = 0.0, w ∝ 0.1 / eps
    blender.eps = 0.01
    weights = blender.update(20, {"a": 0.6, "b": 0.9}, {"a": 1.0, "b": 1.1})
    record = blender.history[-1]
    assert record["G"] == pytest.approx({"a": 0.2, "b": 0.1})
    assert record["O"] == pytest.approx({"a": 0.2, "b": 0.0}, abs=1e-12)
    raw_a, raw_b = 0.2 / (0.04 + 0.01), 0.1 / (0.0 + 0.01)
    assert weights["a"] == pytest.approx(raw_a / (raw_a + raw_b))
    assert weights["b"] == pytest.approx(raw_b / (raw_a + raw_b))
    assert sum(weights.values()) == pytest.approx(1.0)


def test_smoothing_window_and_best_so_far_references():
    blender = GradientBlender(["x"], window=3, every=1)
    for step, (train, val) in enumerate([(3.0, 4.0), (1.0, 2.0), (2.0, 3.0), (5.0, 6.0)], 1):
        blender.update(step, {"x": train}, {"x": val})
    history = blender.history
    assert [r["smoothed_val"]["x"] for r in history] == pytest.approx([4.0, 3.0, 3.0, 11 / 3])
    assert [r["smoothed_train"]["x"] for r in history] == pytest.approx([3.0, 2.0, 2.0, 8 / 3])
    # references are the best smoothed values of the *earlier* measurements
    assert history[0]["ref_val"] is None
    assert [r["ref_val"]["x"] for r in history[1:]] == pytest.approx([4.0, 3.0, 3.0])
    assert history[-1]["G"]["x"] == pytest.approx(3.0 - 11 / 3)  # worse than the best: G < 0


def test_overfitting_branch_loses_weight_and_generalizing_branch_gains():
    blender = GradientBlender(["overfit", "general"], window=3, every=50)
    for index, (train, val) in enumerate(curves()):
        blender.update(50 * (index + 1), train, val)
    steps, series = blender.weight_trajectories()
    assert steps[:3] == [0, 50, 100] and len(steps) == 21
    overfit, general = series["overfit"], series["general"]
    print("overfit branch weight:", [round(w, 3) for w in overfit])
    # while it generalises (validation falling as fast as training) the fast learner leads
    assert max(overfit[2:7]) > 0.6
    # once its validation loss turns up (point 6, seen through the W = 3 smoothing) its weight
    # collapses and the generalizing branch takes over
    assert max(overfit[10:]) < 0.05 and min(general[10:]) > 0.95
    assert overfit[-1] < blender.initial["overfit"] < general[-1]
    for record in blender.history[10:]:
        assert record["G"]["overfit"] <= 0 < record["G"]["general"]
    assert all(abs(sum(r["weights"].values()) - 1.0) < 1e-9 for r in blender.history)


def test_floor_keeps_every_loss_learning_and_no_progress_keeps_weights():
    blender = GradientBlender(["overfit", "general"], window=3, every=50, floor=0.2)
    for index, (train, val) in enumerate(curves()):
        blender.update(50 * (index + 1), train, val)
    assert blender.weights["overfit"] == pytest.approx(0.2 * 0.5)
    assert sum(blender.weights.values()) == pytest.approx(1.0)

    stalled = GradientBlender(["a", "b"], window=1, every=1, initial={"a": 3.0, "b": 1.0})
    assert stalled.weights == {"a": 0.75, "b": 0.25}
    stalled.update(1, {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    stalled.update(2, {"a": 0.5, "b": 0.5}, {"a": 1.1, "b": 1.3})  # neither generalised
    assert stalled.weights == {"a": 0.75, "b": 0.25} and not stalled.history[-1]["updated"]


def test_reusable_for_task_versus_regularization_losses():
    """The same machinery weights a student's task loss against its regulariser."""
    blender = GradientBlender(["task", "con_reg"], window=2, every=1, total=2.0)
    losses = {"task": torch.tensor(1.5, requires_grad=True),
              "con_reg": torch.tensor(0.4, requires_grad=True)}
    total = blender.combine(losses)
    total.backward()
    assert float(total.detach()) == pytest.approx(1.5 + 0.4)  # weights 1 and 1 (sum to total = 2)
    assert float(losses["task"].grad) == pytest.approx(1.0)
    # the regulariser generalises (its validation value tracks its training value), the
    # task loss overfits: the regulariser's share grows
    for step in range(1, 8):
        blender.update(step, {"task": 1.5 - 0.2 * step, "con_reg": 0.5 - 0.03 * step},
                       {"task": 1.6 - 0.02 * step, "con_reg": 0.55 - 0.03 * step})
    assert blender.weights["con_reg"] > 1.9 and sum(blender.weights.values()) == \
        pytest.approx(2.0)
    with pytest.raises(KeyError, match="con_reg"):
        blender.combine({"task": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="not finite"):
        blender.update(9, {"task": float("nan"), "con_reg": 0.1}, {"task": 1, "con_reg": 1})


def test_due_state_round_trip_history_and_plot(tmp_path):
    blender = GradientBlender(["overfit", "general"], window=3, every=50)
    assert [s for s in range(0, 201) if blender.due(s)] == [50, 100, 150, 200]
    for index, (train, val) in enumerate(curves(8)):
        blender.update(50 * (index + 1), train, val)
    state = json.loads(json.dumps(blender.state_dict()))  # JSON-safe, for checkpoints
    restored = GradientBlender.from_state_dict(state)
    assert restored.weights == blender.weights and restored.history == blender.history
    train, val = next(iter(curves(1)))
    assert restored.update(450, train, val) == blender.update(450, train, val)

    lines = blender.save_history(tmp_path / "blend.jsonl").read_text().splitlines()
    assert len(lines) == 9 and set(json.loads(lines[-1])["weights"]) == {"overfit", "general"}
    pytest.importorskip("matplotlib")
    png = plot_weights(blender, tmp_path / "weights.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    svg = plot_weights(blender.state_dict(), tmp_path / "weights.svg", title="test")
    assert "overfit" in svg.read_text()
