"""Con-Reg, Dis-Reg, KD and the linear probes on inputs whose values can be worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.losses import (  # noqa: E402
    FusionHead, Projection, Regularizer, con_reg_loss, dis_reg_loss, fit_crossfit_probes,
    fit_probe, kd_loss, mixup_cross_entropy, pairwise_cosine_distance)
from edgeaudio.train.students import build_student  # noqa: E402

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_con_reg_is_the_mean_cosine_distance_over_batch_and_time():
    l = t([[E1, E2]])                         # [B=1, T=2, D=2]
    assert con_reg_loss(l, t([[E1, E1]])).item() == pytest.approx(0.5)    # 0 and 1
    assert con_reg_loss(l, t([[E1, E2]])).item() == pytest.approx(0.0)
    assert con_reg_loss(l, t([[[-1.0, 0.0], [0.0, -3.0]]])).item() == pytest.approx(2.0)
    # 45 degrees: 1 - cos(pi/4); the scale of either side does not matter
    assert con_reg_loss(t([[[2.0, 0.0]]]), t([[[5.0, 5.0]]])).item() == \
        pytest.approx(1 - math.cos(math.pi / 4), abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        con_reg_loss(l, t([[E1]]))


def test_con_reg_projects_the_teacher_with_a_kernel_size_1_conv1d():
    reg = Regularizer("con", teacher_dim=3, student_dim=2)
    conv = reg.projection.conv
    assert isinstance(conv, torch.nn.Conv1d) and conv.kernel_size == (1,)
    assert (conv.in_channels, conv.out_channels) == (3, 2)
    with torch.no_grad():   # f(v) = first two teacher features
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0] = 1.0
        conv.weight[1, 1, 0] = 1.0
    v = t([[[1.0, 0.0, 7.0], [1.0, 0.0, -2.0]]])   # projects to E1, E1
    l = t([[E1, E2]])
    assert reg(l, v).item() == pytest.approx(0.5)
    # applied per frame: the same as a Linear on each frame
    p = Projection(3, 2)
    x = torch.randn(2, 5, 3)
    ref = x @ p.conv.weight[:, :, 0].T + p.conv.bias
    assert torch.allclose(p(x), ref, atol=1e-6)


def test_dis_reg_compares_pairwise_cosine_distances():
    l = t([[E1], [E2], [E1]])    # distances: (0,1)=1 (0,2)=0 (1,2)=1
    v = t([[E1], [E1], [E2]])    # distances: (0,1)=0 (0,2)=1 (1,2)=1
    assert torch.allclose(pairwise_cosine_distance(l),
                          t([[0, 1, 0], [1, 0, 1], [0, 1, 0]]), atol=1e-6)
    # |1-0| + |0-1| + |1-1| over the 3 pairs (each counted twice in the 6 ordered pairs)
    assert dis_reg_loss(l, v).item() == pytest.approx(2 / 3)
    # the same geometry in another space (rotated, scaled, other width) costs nothing
    v_same = t([[[0, 3.0, 0]], [[4.0, 0, 0]], [[0, 1.0, 0]]])
    assert dis_reg_loss(l, v_same).item() == pytest.approx(0.0, abs=1e-6)
    # a batch of one has no pairs
    assert dis_reg_loss(l[:1], v[:1]).item() == 0.0
    # whole sequences are flattened: frames stay aligned
    a = t([[E1, E2], [E1, E1]])      # cos = 1/sqrt(2)*... : [1,0,0,1].[1,0,1,0] = 1 / 2
    b = t([[E1, E2], [E2, E1]])      # [1,0,0,1].[0,1,1,0] = 0
    assert dis_reg_loss(a, b).item() == pytest.approx(0.5)


def test_regularizers_pass_gradients_to_the_student_and_the_projection():
    l = torch.randn(4, 3, 8, requires_grad=True)
    v = torch.randn(4, 3, 16)
    for kind in ("con", "dis"):
        reg = Regularizer(kind, 16, 8)
        loss = reg(l, v)
        loss.backward()
        assert l.grad is not None and torch.isfinite(l.grad).all() and l.grad.abs().sum() > 0
        l.grad = None
        if kind == "con":
            assert reg.projection.conv.weight.grad.abs().sum() > 0
    assert Regularizer("none")(l, v).item() == 0.0
    with pytest.raises(ValueError):
        Regularizer("foo")


def test_kd_loss_is_zero_at_the_target_and_matches_the_kl_formula():
    logits = t([[2.0, 0.0, -1.0]])
    T = 2.0
    p = torch.softmax(logits / T, dim=1)
    assert kd_loss(logits, p, T).item() == pytest.approx(0.0, abs=1e-6)
    target = t([[0.5, 0.5, 0.0]])
    q = torch.softmax(logits / T, dim=1)[0].tolist()
    expected = T * T * (0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1]))
    assert kd_loss(logits, target, T).item() == pytest.approx(expected, rel=1e-5)


def test_mixup_cross_entropy_weights_the_two_labels():
    logits = t([[1.0, 0.0]])
    a, b = torch.tensor([0]), torch.tensor([1])
    ce_a = math.log(1 + math.exp(-1.0))
    ce_b = math.log(1 + math.exp(1.0))
    assert mixup_cross_entropy(logits, a, b, 0.7).item() == pytest.approx(0.7 * ce_a + 0.3 * ce_b,
                                                                           rel=1e-5)


@pytest.mark.parametrize("method", ["feature-only", "concat", "film"])
def test_fusion_baselines_give_logits(method):
    student = build_student("tiny", 5)
    network = student.network
    head = FusionHead(method, teacher_dim=12, student_dim=network.embedding_dim, n_classes=5)
    l = torch.randn(3, 4, network.embedding_dim)
    v = torch.randn(3, 4, 12)
    out = head(network, l, v)
    assert out.shape == (3, 5)
    out.sum().backward()


def _blobs(n_per_class=12, dim=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(classes, dim))
    x = np.concatenate([centres[c] + rng.normal(0, 0.5, (n_per_class, dim)) for c in range(classes)])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_probe_z_normalizes_then_l2_normalizes_and_separates_blobs():
    x, y = _blobs()
    probe = fit_probe(x, y, n_classes=3, c=10.0)
    z = probe.normalize(x)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)
    assert np.allclose(probe.mean, x.mean(axis=0))
    assert (probe.logits(x).argmax(1) == y).mean() == 1.0
    p = probe.probabilities(x, temperature=2.0)
    assert np.allclose(p.sum(axis=1), 1.0)
    # a hotter temperature gives softer targets
    assert p.max(axis=1).mean() < probe.probabilities(x).max(axis=1).mean()


def test_crossfit_probes_never_score_a_clip_they_were_fitted_on():
    x, y = _blobs(n_per_class=10)
    train = np.arange(0, len(y), 1)[np.arange(len(y)) % 6 != 0]
    fits = fit_crossfit_probes(x, y, train, 3, k=5, seed=0, c_grid=(1.0, 10.0))
    assert set(fits.assignment) == set(train.tolist())
    assert len(fits.probes) == 5 and fits.c in (1.0, 10.0)
    parts = np.array([fits.assignment[i] for i in train])
    assert set(parts.tolist()) == set(range(5))
    held_out = [i for i in range(len(y)) if i not in fits.assignment]
    assert fits.probe_for(held_out[0]) is fits.full
    assert fits.probe_for(int(train[0])) is fits.probes[parts[0]]
    assert fits.oof_accuracy > 0.9
