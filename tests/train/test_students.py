"""Harmonic filterbank and harmonic-CNN students: sizes, shapes, filter physics, export."""
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from edgeaudio.frontend import Frontend  # noqa: E402
from edgeaudio.train.harmonic import ERB_ALPHA, ERB_BETA, HarmonicFilterbank  # noqa: E402
from edgeaudio.train.students import (  # noqa: E402
    STUDENTS, build_student, count_macs_per_second, count_params, list_students)

torch.set_num_threads(1)

SR = 16000
N_CLASSES = 50  # ESC-50: the size limits are stated for up to 50 classes
LIMITS = {"tiny": 70_000, "small": 250_000, "base": 1_000_000}


def tones(freqs, seconds=1.0, amplitude=0.5):
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * np.pi * torch.tensor(freqs)[:, None] * t)).float()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_student("tiny", N_CLASSES).eval()


# --- sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LIMITS))
def test_param_count_within_named_limit(name):
    assert count_params(build_student(name, N_CLASSES).network) <= LIMITS[name]


def test_won2020_reference_has_the_published_size():
    params = count_params(build_student("won2020", N_CLASSES).network)
    assert 3.4e6 <= params <= 3.9e6  # paper: ~3.6 M


def test_list_students_names_sizes_in_order():
    rows = [r for r in list_students(N_CLASSES) if r["family"] == "harmonic"]
    assert [r["name"] for r in rows] == list(STUDENTS) == ["tiny", "small", "base", "won2020"]
    params = [r["params"] for r in rows]
    assert params == sorted(params)
    assert all(r["description"] for r in rows)


def test_unknown_student_or_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown student 'huge'"):
        build_student("huge", 10)
    with pytest.raises(TypeError, match="n_mels"):
        build_student("tiny", 10, n_mels=64)


def test_macs_per_second_grow_with_size_and_do_not_depend_on_clip_length(tiny):
    macs = {n: count_macs_per_second(build_student(n, N_CLASSES))["network"] for n in STUDENTS}
    assert 0 < macs["tiny"] < macs["small"] < macs["base"] < macs["won2020"]
    ten, twenty = (count_macs_per_second(tiny, s)["network"] for s in (10.0, 20.0))
    assert abs(ten - twenty) / twenty < 0.05
    # dense front-end matmul: 384 filters x 513 bins x 50 frames/s
    assert count_macs_per_second(tiny)["filterbank"] == 384 * 513 * 50


# --- shapes --------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [1.0, 5.0])
@pytest.mark.parametrize("name", list(STUDENTS))
def test_feature_embedding_and_logit_shapes(name, seconds):
    student = build_student(name, N_CLASSES).eval()
    wave = torch.randn(2, int(SR * seconds)) * 0.1
    spec = student.frontend.spec
    frames = spec.n_frames(wave.shape[1])
    assert frames == {1.0: 49, 5.0: 249}[seconds]  # 32 ms window, 20 ms hop
    with torch.no_grad():
        feats = student.features(wave)
        emb = student.network.embed(feats)
        logits = student.network.classify(emb)
    assert feats.shape == (2, frames, student.network.n_bins)
    assert emb.shape == (2, frames // student.network.time_stride, student.network.embedding_dim)
    assert logits.shape == (2, N_CLASSES)
    assert torch.isfinite(logits).all()
    assert student.embedding_hop_seconds == pytest.approx(0.16)


def test_frozen_spec_runs_in_the_numpy_front_end(tiny):
    spec = tiny.frontend.frozen_spec()
    assert spec.n_bins == 384 and spec.filterbank["source"]["kind"] == "harmonic"
    json.dumps(spec.to_dict())
    wave = tones([440.0])[0] + 0.01 * torch.randn(SR)
    with torch.no_grad():
        torch_feats = tiny.features(wave[None])[0].numpy()
    assert np.abs(Frontend(spec)(wave.numpy()) - torch_feats).max() <= 1e-4


# --- harmonic filterbank -------------------------------------------------------------------

def test_filterbank_layout_is_harmonic_major_on_a_semitone_grid():
    fb = HarmonicFilterbank(SR, 1024)
    F = fb.n_freq
    assert fb().shape == (6 * 64, 513)
    c = fb.centres_hz.view(6, F)
    assert c[0, 0].item() == pytest.approx(32.703, abs=1e-3)  # C1
    assert torch.allclose(c[0, 1:] / c[0, :-1], torch.full((F - 1,), 2 ** (1 / 12)))
    assert torch.allclose(c, torch.arange(1, 7)[:, None] * c[0])


def test_filterbank_is_non_negative_triangles_with_the_erb_bandwidth():
    fb = HarmonicFilterbank(SR, 1024)
    m = fb().detach()
    assert (m >= 0).all() and m.max() <= 1.0
    assert (m.sum(dim=1) > 0).all(), "every filter must catch an FFT bin at Q=1"
    bw = (ERB_ALPHA * fb.centres_hz + ERB_BETA) / 1.0
    assert torch.allclose(fb.bandwidths_hz(), bw)
    outside = (fb.fft_freqs_hz[None, :] - fb.centres_hz[:, None]).abs() >= bw[:, None] / 2
    assert (m[outside] == 0).all()
    with torch.no_grad():
        fb.log_q.fill_(np.log(2.0))
    assert torch.allclose(fb.bandwidths_hz(), bw / 2)


def test_filters_above_nyquist_are_zero_rows():
    fb = HarmonicFilterbank(SR, 1024, n_semitones=84)  # reaches B7 x 6, far above 8 kHz
    m = fb().detach()
    above = fb.centres_hz > SR / 2
    assert above.any() and (m[above] == 0).all() and (m[~above].sum(dim=1) > 0).all()


def test_pure_tone_lands_in_the_nearest_first_harmonic_filter(tiny):
    fb = tiny.frontend.learnable_filterbank
    F = fb.n_freq
    centres = fb.centres_hz[:F].numpy()
    # from A3 up: below ~200 Hz a 32 ms window cannot tell neighbouring semitones apart
    grid = centres[centres >= 219.0]
    freqs = np.concatenate([grid, grid * 2 ** (0.3 / 12)])
    with torch.no_grad():
        feats = tiny.features(tones(freqs.tolist())).mean(dim=1)  # [tones, H*F]
    winners = feats[:, :F].argmax(dim=1).numpy()
    nearest = np.abs(freqs[:, None] - centres[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(winners, nearest)


def test_tone_appears_in_the_second_harmonic_channel_at_half_its_frequency(tiny):
    fb = tiny.frontend.learnable_filterbank
    F = fb.n_freq
    with torch.no_grad():
        feats = tiny.features(tones([880.0])).mean(dim=1)[0]
    a4 = int(np.argmin(np.abs(fb.centres_hz[:F].numpy() - 440.0)))
    assert int(feats[F:2 * F].argmax()) == a4


def test_gradient_flows_to_q():
    student = build_student("tiny", 5)
    fb = student.frontend.learnable_filterbank
    loss = student(tones([300.0, 1000.0])).square().mean()
    loss.backward()
    assert fb.log_q.grad is not None and fb.log_q.grad.abs().item() > 0
    assert torch.isfinite(fb.log_q.grad).all()


def test_fixed_q_has_no_parameters_and_describe_is_json():
    fb = HarmonicFilterbank(SR, 1024, learn_q=False, q_init=2.0)
    assert list(fb.parameters()) == []
    d = json.loads(json.dumps(fb.describe()))
    assert d["q"] == pytest.approx(2.0) and d["n_harmonics"] == 6 and d["learn_q"] is False


# --- deployability -------------------------------------------------------------------------

def _with_trained_batchnorm(network, n_frames=49):
    """Give every BatchNorm non-trivial running statistics, then switch to eval."""
    torch.manual_seed(1)
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(8, n_frames, network.n_bins) * 3 - 5)
    return network.eval()


@pytest.mark.parametrize("name", list(STUDENTS))
def test_every_conv_batchnorm_pair_folds(name):
    network = _with_trained_batchnorm(build_student(name, N_CLASSES).network)
    x = torch.randn(2, 49, network.n_bins) * 3 - 5
    with torch.no_grad():
        before = network(x)
        pairs = 0
        for module in network.modules():
            if isinstance(module, nn.Sequential) and len(module) >= 2 \
                    and isinstance(module[0], nn.Conv2d) and isinstance(module[1], nn.BatchNorm2d):
                module[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(module[0], module[1])
                module[1] = nn.Identity()
                pairs += 1
        after = network(x)
    n_bn2d = sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert pairs > 0 and n_bn2d == 1  # only the input BN (a per-harmonic affine) is left
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_tiny_network_exports_to_onnx_and_tflite_with_matching_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    litert_torch = pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    network = _with_trained_batchnorm(build_student("tiny", N_CLASSES).network)
    torch.manual_seed(2)
    x = torch.randn(1, 49, network.n_bins) * 3 - 5  # 1 s of log features
    with torch.no_grad():
        expected = network(x).numpy()
    assert expected.std() > 1e-2  # a meaningful comparison, not near-zero logits

    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(network, (x,), str(onnx_path), dynamo=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    tflite_path = tmp_path / "tiny.tflite"
    litert_torch.convert(network, (x,)).export(str(tflite_path))
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
