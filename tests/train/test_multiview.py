"""Multi-view network: branches and heads, fusion modes, self-ensemble, blending end to end."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.blending import plot_weights  # noqa: E402
from edgeaudio.train.multiview import (  # noqa: E402
    CRNNBranch, MultiViewNet, MultiViewObjective, RawBranch, describe_costs,
    evaluate_head_losses, self_ensemble)

torch.set_num_threads(1)
SR = 16000
SMALL = {"branch": {"channels": (4, 8), "rnn_hidden": 8},
         "raw_branch": {"channels": (4, 8, 8), "rnn_hidden": 8}}


def test_branch_and_head_shapes():
    torch.manual_seed(0)
    model = MultiViewNet("mel,gammatone,cqt,raw", n_classes=5).eval()
    assert model.head_names == ["mel", "gammatone", "cqt", "raw", "joint"]
    wave = torch.randn(2, SR) * 0.1
    with torch.no_grad():
        embeddings = model.embeddings(wave)
        outputs = model(wave)
    assert {name: tuple(e.shape) for name, e in embeddings.items()} == \
        {name: (2, 256) for name in ("mel", "gammatone", "cqt", "raw")}
    assert {name: tuple(o.shape) for name, o in outputs.items()} == \
        {name: (2, 5) for name in model.head_names}
    assert model.joint.in_features == 4 * 256
    with torch.no_grad():  # cached view features give the same outputs
        cached = model.forward_views(model.view_inputs(wave))
    assert all(torch.equal(cached[name], outputs[name]) for name in model.head_names)
    # branch sequences: one frame per 8 feature frames (20 ms) = 160 ms; raw: per 320 samples
    branch = model.branches["mel"]
    assert isinstance(branch, CRNNBranch) and branch.time_stride == 8
    with torch.no_grad():
        assert branch.sequence(model.views["mel"](wave)).shape == (2, 49 // 8, 128)
        raw = model.branches["raw"]
        assert isinstance(raw, RawBranch) and raw.time_stride == 320
        assert raw.sequence(wave).shape == (2, SR // 320, 128)
    with pytest.raises(ValueError, match="unknown"):
        MultiViewNet("mel,spectrogram", 5)
    with pytest.raises(ValueError, match=r"\[B, samples\]"):
        model(torch.zeros(SR))


def test_costs_are_reported_per_branch():
    costs = describe_costs(MultiViewNet("mel,cqt,raw", n_classes=50))
    assert set(costs) == {"mel", "cqt", "raw", "joint"}
    assert all(c["params"] > 0 and c["macs"] > 0 for c in costs.values())
    assert costs["mel"]["params"] < 100_000        # small enough for a 2-core CPU
    assert costs["cqt"]["macs"] > costs["mel"]["macs"]  # CQT kernel products are counted
    assert costs["mel"]["input_shape"] == [249, 64]


def test_fusion_modes_train_and_read_out_the_right_heads():
    torch.manual_seed(0)
    model = MultiViewNet("mel,raw", n_classes=3, **SMALL)
    wave, target = torch.randn(4, SR // 2) * 0.1, torch.tensor([0, 1, 2, 1])
    outputs = model(wave)
    expected_heads = {"blend": ["mel", "raw", "joint"], "uniform": ["mel", "raw", "joint"],
                      "concat": ["joint"], "late": ["mel", "raw"]}
    for mode, heads in expected_heads.items():
        objective = MultiViewObjective(model, mode=mode, every=2)
        loss, parts = objective.loss(outputs, target)
        assert sorted(parts) == sorted(heads) and loss.requires_grad
        probs = objective.predict_proba(outputs)
        assert probs.shape == (4, 3)
        assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-6)
    # concat trains and reads out the joint head alone
    concat = MultiViewObjective(model, mode="concat")
    assert torch.allclose(concat.predict_proba(outputs), outputs["joint"].softmax(-1))
    assert float(concat.loss(outputs, target)[0].detach()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(outputs["joint"], target).detach()))
    # late fusion averages the per-view probabilities
    late = MultiViewObjective(model, mode="late").predict_proba(outputs)
    assert torch.allclose(late, (outputs["mel"].softmax(-1) + outputs["raw"].softmax(-1)) / 2)
    with pytest.raises(ValueError, match="unknown fusion mode"):
        MultiViewObjective(model, mode="sum")


def test_self_ensemble_weights_branch_probabilities():
    logits = {"a": torch.tensor([[2.0, 0.0]]), "b": torch.tensor([[0.0, 3.0]]),
              "joint": torch.tensor([[1.0, 1.0]])}
    weights = {"a": 0.6, "b": 0.1, "joint": 0.3}
    expected = (0.6 * logits["a"].softmax(-1) + 0.1 * logits["b"].softmax(-1)
                + 0.3 * logits["joint"].softmax(-1))
    assert torch.allclose(self_ensemble(logits, weights), expected)
    # unnormalised weights give the same distribution
    assert torch.allclose(self_ensemble(logits, {k: 10 * v for k, v in weights.items()}),
                          expected)
    with pytest.raises(ValueError, match="zero"):
        self_ensemble(logits, {"a": 0.0})


def _toy_batches(n_batches: int, seed: int, batch: int = 8):
    """Two classes: a 500 Hz tone or a 1.5 kHz tone, in noise, 0.25 s each."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(SR // 4) / SR
    batches = []
    for _ in range(n_batches):
        target = torch.randint(0, 2, (batch,), generator=generator)
        freq = torch.where(target == 0, 500.0, 1500.0)[:, None]
        phase = torch.rand(batch, 1, generator=generator) * 2 * math.pi
        wave = 0.3 * torch.sin(2 * math.pi * freq * t + phase) + \
            0.1 * torch.randn(batch, t.numel(), generator=generator)
        batches.append((wave, target))
    return batches


def test_blended_training_end_to_end(tmp_path):
    """A few optimisation steps with blending: the weights are measured every N steps on a
    fixed training subset and the validation batches, logged, plotted; loss falls."""
    torch.manual_seed(0)
    model = MultiViewNet("mel,gammatone,raw", n_classes=2, **SMALL)
    objective = MultiViewObjective(model, mode="blend", window=2, every=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = _toy_batches(6, seed=1)
    train_subset, val = train[:2], _toy_batches(2, seed=2)
    before = evaluate_head_losses(model, val)
    assert set(before) == {"mel", "gammatone", "raw", "joint"}
    step = 0
    for _ in range(4):
        for wave, target in train:
            step += 1
            loss, _ = objective.loss(model(wave), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            objective.after_step(step, model, train_subset, val)
    after = evaluate_head_losses(model, val)
    print("val losses before", before, "after", after, "weights", objective.weights)
    assert after["joint"] < before["joint"]
    history = objective.blender.history
    assert [r["step"] for r in history] == [4, 8, 12, 16, 20, 24]
    assert all(abs(sum(r["weights"].values()) - 1) < 1e-9 for r in history)
    assert objective.weights != {n: 0.25 for n in model.head_names}  # it adapted
    model.eval()
    with torch.no_grad():
        probs = objective.predict_proba(model(val[0][0]))
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-6)
    assert plot_weights(objective.blender, tmp_path / "w.png").stat().st_size > 0
    # the objective's state (the blender's weights and history) survives a checkpoint
    clone = MultiViewObjective(model, mode="blend", window=2, every=4)
    clone.load_state_dict(objective.state_dict())
    assert clone.weights == objective.weights
