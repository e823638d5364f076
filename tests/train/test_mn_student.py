"""The mn student family: sizes against EfficientAT's layout, weight inheritance from mn04
(exact at mn04's own width; kept channels equal the teacher's, chosen by importance, residual
streams aligned), variants, and a front end the runtime computes that matches EfficientAT's."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.audio import load_audio  # noqa: E402
from edgeaudio.files import shared_dir  # noqa: E402
from edgeaudio.frontend import Frontend, FrontendSpec  # noqa: E402
from edgeaudio.train.mn_student import (MN_STUDENTS, MNConfig, MNNetwork, MNStudent,  # noqa: E402
                                        audioset_student, block_plans,
                                        build_mn_student, efficientat_matrix_16k,
                                        frontend_agreement, inherit_from_mn04, mn_frontend_spec,
                                        recalibrate_batchnorm, top_indices, CausalConv2d,
                                        MNStreamStep)
from edgeaudio.train.frontend import TorchFrontend  # noqa: E402
from edgeaudio.train.students import build_student, count_params, list_students  # noqa: E402
from edgeaudio.train.teachers.efficientat import MobileNetV3Audio  # noqa: E402

from ..conftest import esc50_clip  # noqa: E402

MN04_WEIGHTS = shared_dir() / "weights" / "efficientat" / "mn04_as_mAP_432.pt"


@pytest.fixture(scope="module")
def teacher():
    """A width-0.4 network (mn04's architecture) with distinct, seeded weights and BatchNorm
    statistics, so that every importance differs (no ties) without the shared weights."""
    torch.manual_seed(0)
    net = MobileNetV3Audio(width_mult=0.4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-2.0, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def student_at(width: float, n_classes: int = 527, **kw) -> MNStudent:
    config = MNConfig("test", "", width, **kw)
    return MNStudent(config, TorchFrontend(mn_frontend_spec()), MNNetwork(config, n_classes))


def teacher_input(x):
    return ((x + 4.5) / 5.0).transpose(1, 2).unsqueeze(1)


# --- sizes -----------------------------------------------------------------------------------

def test_sizes_follow_efficientats_layout_and_fit_the_budget():
    mn02 = build_student("mn02", 50).network
    mn01 = build_student("mn01", 50).network
    # EfficientAT's own network at width 0.2 has exactly mn02's backbone
    assert count_params(mn02.features) == count_params(MobileNetV3Audio(0.2).features) == 139_848
    # mn01 keeps three 8 -> 8 expand convs EfficientAT leaves out (3 x (64 + 16 BN) params)
    assert count_params(mn01.features) == count_params(MobileNetV3Audio(0.1).features) + 3 * 80
    assert (mn02.embedding_dim, mn01.embedding_dim) == (192, 96)
    assert count_params(mn02) <= 250_000 and count_params(mn01) <= 70_000
    assert count_params(build_student("mn04-short", 50).network) <= 250_000
    short320 = build_student("mn04-short320", 50).network
    assert (short320.embedding_dim, short320.head[0].out_features) == (320, 96)
    assert count_params(short320) == 203_412
    assert count_params(build_student("mn04-tiny", 50).network) <= 70_000
    for name in ("mn02-short", "mn02-slim"):
        assert count_params(build_student(name, 50).network) < count_params(mn02)
    rows = {r["name"]: r for r in list_students(50)}
    assert {n: rows[n]["family"] for n in MN_STUDENTS} == {n: "mn" for n in MN_STUDENTS}


@pytest.mark.parametrize("frames", [100, 401])
def test_shapes_embedding_every_32_frames(frames):
    net = build_mn_student("mn01", 7).network.eval()
    x = torch.randn(2, frames, 128)
    assert net.embed(x).shape == (2, -(-frames // 32), 96)
    assert net(x).shape == (2, 7)


# --- inheritance -----------------------------------------------------------------------------

def test_inheriting_at_mn04s_own_width_reproduces_the_teacher(teacher):
    student = student_at(0.4).eval()
    report = inherit_from_mn04(student, teacher)
    assert [len(s) for s in report["stream"]] == [8, 16, 16, 32, 48, 64]
    x = torch.randn(2, 200, 128)
    with torch.no_grad():
        assert torch.allclose(student.network(x), teacher(teacher_input(x))[0], atol=1e-4)


@pytest.mark.parametrize("importance", ["bn", "l1"])
def test_kept_channels_are_the_most_important_and_carry_the_teachers_weights(teacher,
                                                                            importance):
    student = build_mn_student("mn02", 527)
    report = inherit_from_mn04(student, teacher, importance)
    t_blocks, s_net = teacher.features, student.network
    s_blocks = {plan.block: s_net.features[i + 1] for i, plan in enumerate(s_net.plans)}

    # block 4: expand (stream 1 -> expanded), depthwise, SE, project (-> stream 2, which
    # blocks 5 and 6 add into); stream 0 is the first conv's (block 1 adds into it), stream 1
    # block 2's (block 3 adds into it)
    t4, s4 = t_blocks[4].block, s_blocks[4].block
    exp = torch.tensor(report["blocks"][4]["expanded"])
    stream_in, stream_out = (torch.tensor(report["stream"][k]) for k in (1, 2))
    assert len(exp) == s4[0][0].out_channels == 16 and len(stream_in) == 8
    assert torch.equal(s4[0][0].weight, t4[0][0].weight[exp][:, stream_in])
    assert torch.equal(s4[1][0].weight, t4[1][0].weight[exp])                  # depthwise
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(s4[1][1], name), getattr(t4[1][1], name)[exp])
    squeeze = torch.tensor(report["blocks"][4]["squeeze"])
    se_t, se_s = t4[2].conc_se_layers[0], s4[2].conc_se_layers[0]
    assert torch.equal(se_s.fc1.weight, se_t.fc1.weight[squeeze][:, exp])
    assert torch.equal(se_s.fc2.bias, se_t.fc2.bias[exp])
    assert torch.equal(s4[3][0].weight, t4[3][0].weight[stream_out][:, exp])

    # the importance order: every kept expanded channel outranks every dropped one
    score = (t4[1][1].weight.abs() if importance == "bn"
             else t4[0][0].weight.abs().flatten(1).sum(1)).detach()
    dropped = torch.tensor([i for i in range(len(score)) if i not in set(exp.tolist())])
    assert score[exp].min() > score[dropped].max()

    # a residual stream is one choice for all its writers: blocks 5 and 6 add into the stream
    # block 4 opened, and read it with the same indices
    for block in (5, 6):
        t, s = t_blocks[block].block, s_blocks[block].block
        e = torch.tensor(report["blocks"][block]["expanded"])
        assert torch.equal(s[0][0].weight, t[0][0].weight[e][:, stream_out])
        assert torch.equal(s[-1][0].weight, t[-1][0].weight[stream_out][:, e])
    writers = [t_blocks[b].block[-1] for b in (4, 5, 6)]
    summed = sum(w[1].weight.abs() if importance == "bn"
                 else w[0].weight.abs().flatten(1).sum(1) for w in writers).detach()
    rest = torch.tensor([i for i in range(len(summed)) if i not in set(stream_out.tolist())])
    assert summed[stream_out].min() > summed[rest].max()
    assert report["head_inherited"]
    assert torch.equal(s_net.head[3].weight, teacher.classifier[5].weight[:, report["hidden"]])


def test_a_task_head_starts_fresh_and_the_backbone_is_inherited(teacher):
    student = build_mn_student("mn01", 10)
    report = inherit_from_mn04(student, teacher)
    assert not report["head_inherited"]
    assert torch.equal(student.network.features[0][0].weight,
                       teacher.features[0][0].weight[report["stream"][0]])


def test_top_indices_keeps_order_and_breaks_ties_by_index():
    assert top_indices(torch.tensor([0.1, 3.0, 3.0, 2.0, 0.5]), 3).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="cannot keep 6 of 5"):
        top_indices(torch.zeros(5), 6)


def test_variants_drop_residual_blocks_or_shrink_late_ones(teacher):
    short = build_mn_student("mn02-short", 527)
    assert [p.block for p in short.network.plans] == list(range(1, 14))
    slim = build_mn_student("mn02-slim", 527)
    assert [p.out_ch for p in slim.network.plans][-3:] == [16, 16, 16]
    for student in (short, slim):
        inherit_from_mn04(student, teacher)
        assert student.network.eval()(torch.randn(1, 64, 128)).shape == (1, 527)
    with pytest.raises(ValueError, match="only residual blocks"):
        block_plans(0.2, drop_blocks=(13,))


def test_mn04_short_keeps_the_teachers_blocks_and_cuts_only_squeezes_and_head(teacher):
    student = build_mn_student("mn04-short", 50)
    assert count_params(student.network) <= 250_000
    report = inherit_from_mn04(student, teacher)
    net = student.network
    assert [p.block for p in net.plans] == list(range(1, 14))
    # every stream and expanded channel is kept, so each conv and BatchNorm is mn04's own
    assert all(s == list(range(len(s))) for s in report["stream"])
    t_state = teacher.features.state_dict()
    last = len(net.features) - 1  # the last 1x1 conv: mn04's features[16]
    for key, value in net.features.state_dict().items():
        index, rest = key.split(".", 1)
        t_key = f"16.{rest}" if int(index) == last else key
        if "conc_se_layers" not in key:
            assert torch.equal(value, t_state[t_key]), key
    # SE squeezes shrink to 1/16 of the expanded channels (272 // 16 rounded to 8s; mn04: 1/4)
    se_t = teacher.features[13].block[2].conc_se_layers[0]
    se_s = net.features[13].block[2].conc_se_layers[0]
    squeeze = torch.tensor(report["blocks"][13]["squeeze"])
    assert (se_t.fc1.out_features, se_s.fc1.out_features) == (72, 16)
    assert torch.equal(se_s.fc1.weight, se_t.fc1.weight[squeeze])
    assert net.head[0].out_features == 128
    assert torch.equal(net.head[0].weight, teacher.classifier[2].weight[report["hidden"]])


def test_expand_width_narrows_the_blocks_inside_and_keeps_the_streams(teacher):
    student = student_at(0.4, expand_width=0.2, expand_from=11)
    plans = {p.block: p for p in student.network.plans}
    wide = {p.block: p for p in student_at(0.4).network.plans}
    assert [plans[b].out_ch for b in plans] == [wide[b].out_ch for b in wide]
    assert [plans[b].expanded for b in range(1, 11)] == [wide[b].expanded for b in range(1, 11)]
    assert plans[14].expanded == 192 and wide[14].expanded == 384
    report = inherit_from_mn04(student, teacher)
    assert all(s == list(range(len(s))) for s in report["stream"])
    assert student.network.eval()(torch.randn(1, 64, 128)).shape == (1, 527)
    # a smaller embedding keeps the last conv's most important channels (BN |gamma|)
    small = student_at(0.4, embedding_dim=96, head_hidden=32)
    report = inherit_from_mn04(small, teacher)
    last = torch.tensor(report["last"])
    gamma = teacher.features[-1][1].weight.detach().abs()
    assert len(last) == small.network.embedding_dim == 96
    assert gamma[last].min() >= gamma.sort(descending=True).values[95]
    with pytest.raises(ValueError, match="expand_from must be >= 2"):
        block_plans(0.4, expand_width=0.2, expand_from=1)


def test_batchnorm_recalibration_changes_statistics_not_weights(teacher):
    student = build_mn_student("mn01", 5).eval()
    inherit_from_mn04(student, teacher)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rng = np.random.default_rng(0)
    recalibrate_batchnorm(student, [rng.normal(0, 0.1, 8000).astype(np.float32)
                                    for _ in range(4)])
    after = student.state_dict()
    assert torch.equal(after["network.features.0.0.weight"], before["network.features.0.0.weight"])
    assert not torch.equal(after["network.features.0.1.running_mean"],
                           before["network.features.0.1.running_mean"])
    assert not student.training


@pytest.mark.skipif(not MN04_WEIGHTS.exists(), reason="mn04 weights not in the shared folder")
def test_inherits_from_the_real_mn04():
    student = audioset_student("mn02")
    assert student.network(torch.zeros(1, 100, 128)).shape == (1, 527)


# --- the causal student (streams chunk by chunk) ------------------------------------------

def test_causal_student_inherits_the_same_channels_and_weights(teacher):
    plain, causal = build_mn_student("mn02", 50), build_mn_student("mn02-stream", 50)
    assert count_params(plain.network) == count_params(causal.network)
    report_plain = inherit_from_mn04(plain, teacher)
    report_causal = inherit_from_mn04(causal, teacher)
    assert report_causal == report_plain
    backbone = {k: v for k, v in causal.network.state_dict().items() if "head.3" not in k}
    assert all(torch.equal(v, plain.network.state_dict()[k]) for k, v in backbone.items())
    dw = causal.network.features[4].block[1][0]
    assert isinstance(dw, CausalConv2d) and dw.freq_padding == 2 and dw.context == 4


def test_nothing_looks_ahead_and_chunks_stream_exactly(teacher):
    student = build_mn_student("mn02-stream", 6)
    inherit_from_mn04(student, teacher)
    net = student.network.eval()
    x = torch.randn(1, 5 * 32, 128)
    later_changed = x.clone()
    later_changed[:, 70:] = torch.randn(1, 90, 128)
    with torch.no_grad():
        frames = net.head(net.embed(x))[0]                       # one logit row per 32 frames
        # frames 0..63 make embedding frames 0 and 1: untouched by anything from frame 70 on
        assert torch.equal(net.head(net.embed(later_changed))[0][:2], frames[:2])
        assert not torch.equal(net.head(net.embed(later_changed))[0][2:], frames[2:])
        step = MNStreamStep(net)
        states, rows = step.zero_states(), []
        assert [s.shape for s in states] == step.state_shapes() and len(states) == 16
        for c in range(5):
            logits, *states = step(x[:, 32 * c:32 * (c + 1)], *states)
            rows.append(logits[0])
        assert torch.allclose(torch.stack(rows), frames, atol=1e-5)
        assert torch.allclose(net(x)[0], frames.mean(dim=0), atol=1e-5)
    with pytest.raises(ValueError, match="not causal"):
        MNStreamStep(build_mn_student("mn02", 6).network)


# --- front end -------------------------------------------------------------------------------

def test_front_end_is_a_stored_matrix_the_runtime_computes():
    spec = FrontendSpec.from_dict(mn_frontend_spec().to_dict())
    assert (spec.sample_rate, spec.n_fft, spec.win_length, spec.hop_length) == (16000, 512,
                                                                                400, 160)
    matrix = spec.filterbank_matrix()
    assert matrix.shape == (128, 257) and np.array_equal(matrix, efficientat_matrix_16k())
    # the bands above 8 kHz are empty: mn04 sees 16 kHz audio resampled to 32 kHz
    assert (matrix.sum(axis=1) > 0).sum() == 105
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, 16000).astype(np.float32)
    ours = TorchFrontend(spec)(torch.from_numpy(wave)[None])[0].numpy()
    assert np.abs(Frontend(spec)(wave) - ours).max() < 1e-4


def test_matrix_folds_the_power_scale_and_preemphasis():
    from edgeaudio.train.teachers.efficientat import kaldi_mel_banks
    banks = kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0)[:, :257]
    matrix = efficientat_matrix_16k()
    band, bin_ = 40, int(np.argmax(banks[40]))
    f = bin_ * 31.25
    gain = abs(1 - 0.97 * np.exp(-2j * np.pi * f / 32000)) ** 2
    assert matrix[band, bin_] == pytest.approx(4 * banks[band, bin_] * gain, rel=1e-5)


def test_front_end_is_close_to_efficientats_on_a_real_clip(esc50):
    wave = load_audio(esc50_clip("1-100032-A-0"), 16000)
    agreement = frontend_agreement([wave])
    assert agreement["bands_compared"] == 105
    # measured 0.05-0.07 on ESC-50 clips, against a spread of ~1 (window shape, framing)
    assert agreement["mean_abs_diff"] < 0.15 < agreement["value_std"]
