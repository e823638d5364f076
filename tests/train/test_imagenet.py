"""ImageNet CNNs as audio teachers: real ImageNet weights, a real photograph, the three-channel
multi-resolution log-mel input, DenseNet-121's torchvision format, the teacher wrapper."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.teachers.base import TeacherWeightsError  # noqa: E402
from edgeaudio.train.teachers.densenet import (  # noqa: E402
    DenseNet121, load_densenet121_checkpoint, torchvision_densenet_state)
from edgeaudio.train.teachers.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0, efficientnet_lite0_weights_path, load_efficientnet_lite0_imagenet)
from edgeaudio.train.teachers.imagenet import (  # noqa: E402
    ImageNetAudioClassifier, imagenet_image_tensor)
from edgeaudio.train.teachers.multires_logmel import MultiResolutionLogMel  # noqa: E402
from edgeaudio.train.teachers.fitted import load_member, save_member  # noqa: E402

torch.set_num_threads(1)

SR = 16000
CAT_CLASSES = {281: "tabby cat", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat",
               285: "Egyptian cat"}


def lite0_weights():
    try:
        return efficientnet_lite0_weights_path()
    except FileNotFoundError as exc:
        pytest.skip(f"EfficientNet-Lite0 ImageNet weights unavailable: {exc}")


@pytest.fixture(scope="module")
def lite0():
    return load_efficientnet_lite0_imagenet(lite0_weights())


# ----------------------------------------------------------------------------- EfficientNet-Lite0

def test_lite0_imagenet_weights_load_strictly():
    state = torch.load(lite0_weights(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    assert list(model.state_dict()) == list(state)  # every name, in order, nothing extra
    for key, value in model.state_dict().items():
        assert value.shape == state[key].shape, key
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    # strictness is real: a missing parameter is refused
    del state["_blocks.15._project_conv.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        EfficientNetLite0().load_state_dict(state, strict=True)


def test_lite0_classifies_the_chelsea_photograph_as_a_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photo")
    image = skimage_data.chelsea()  # Chelsea the cat, 300 x 451 RGB
    x = imagenet_image_tensor(image, "efficientnet_lite0")
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        probs = lite0(x).softmax(dim=-1)[0]
    scores, classes = probs.topk(5)
    top5 = [(int(c), round(float(s), 3)) for c, s in zip(classes, scores)]
    print("chelsea top-5 (ImageNet index, probability):", top5)
    assert int(classes[0]) in CAT_CLASSES, top5
    assert sum(s for c, s in top5 if c in CAT_CLASSES) > 0.8, top5
    # the same network without its weights does not see a cat: the weights carry it
    with torch.no_grad():
        random_top = EfficientNetLite0().eval()(x).softmax(-1)[0].topk(5)
    assert float(random_top.values.sum()) < 0.2


# ----------------------------------------------------------------------------- DenseNet-121

def test_densenet121_torchvision_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DenseNet121().eval()
    assert sum(p.numel() for p in model.parameters()) == 7_978_856  # torchvision's figure
    state = model.state_dict()
    for key in ("features.conv0.weight", "features.norm0.running_var",
                "features.denseblock1.denselayer1.norm1.weight",
                "features.denseblock4.denselayer16.conv2.weight",
                "features.transition3.conv.weight", "features.norm5.bias",
                "classifier.weight", "classifier.bias"):
        assert key in state, key
    assert state["features.denseblock4.denselayer16.conv2.weight"].shape == (32, 128, 3, 3)
    assert state["classifier.weight"].shape == (1000, 1024)
    path = tmp_path / "densenet121.pth"
    torch.save(state, path)
    loaded = load_densenet121_checkpoint(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))

    # torchvision's own download uses "norm.1"-style names (and DataParallel a "module."
    # prefix): both are renamed, then loaded strictly
    legacy = {("module." + k).replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
              for k, v in state.items()}
    assert "module.features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert list(torchvision_densenet_state(legacy)) == list(state)
    torch.save({"state_dict": legacy}, tmp_path / "legacy.pth")
    with torch.no_grad():
        assert torch.equal(load_densenet121_checkpoint(tmp_path / "legacy.pth")(x), model(x))

    del state["features.norm5.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="features.norm5.bias"):
        load_densenet121_checkpoint(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="densenet"):
        ImageNetAudioClassifier("densenet121", 5, pretrained=True)


# ----------------------------------------------------------------------------- three-channel input

def test_three_channel_input_shape():
    frontend = MultiResolutionLogMel()
    wave = torch.randn(2, 5 * SR) * 0.1
    assert [s.shape for s in frontend.native(wave)] == [(2, 128, 501), (2, 128, 201),
                                                         (2, 128, 101)]
    assert (frontend.wins, frontend.hops) == ([400, 800, 1600], [160, 400, 800])
    image = frontend(wave)
    assert image.shape == (2, 3, 128, 250)  # the paper's 128 x 250 for a 5 s clip
    assert torch.isfinite(image).all()
    assert MultiResolutionLogMel(n_frames=224)(wave).shape == (2, 3, 128, 224)
    assert MultiResolutionLogMel()(torch.randn(1, SR)).shape == (1, 3, 128, 50)
    assert MultiResolutionLogMel()(torch.randn(1, SR // 5)).shape == (1, 3, 128, 32)
    with torch.no_grad():  # a 0.2 s clip still gives one embedding frame in both networks
        short = torch.randn(1, SR // 5)
        for arch in ("efficientnet_lite0", "densenet121"):
            model = ImageNetAudioClassifier(arch, 3, pretrained=False).eval()
            assert model.embed(short).shape[:2] == (1, 1)


def test_default_standardisation_fits_real_clips(esc50):
    sf = pytest.importorskip("soundfile")
    frontend = MultiResolutionLogMel()
    for stem in ("1-100032-A-0", "1-17367-A-10"):  # fold 1 (not used for the statistics)
        audio, rate = sf.read(esc50 / "audio" / f"{stem}.flac", dtype="float32")
        image = frontend(torch.from_numpy(audio)[None])
        assert rate == SR and image.shape == (1, 3, 128, 250)
        per_channel_mean = image.mean(dim=(0, 2, 3))
        assert per_channel_mean.abs().max() < 2.5, per_channel_mean  # raw: -3 to -6
        assert float(image.std()) < 2.0                               # raw: about 5
        assert float(image.abs().max()) < 6.0                         # raw: up to 14


def _dip(profile: torch.Tensor) -> float:
    """Depth (in nats of log power) of the valley between the two most prominent peaks of a
    profile, 0 when it shows a single peak: how well two events are told apart."""
    from scipy.signal import find_peaks
    peaks, props = find_peaks(profile.numpy(), prominence=0.0)
    if len(peaks) < 2:
        return 0.0
    return float(np.sort(props["prominences"])[-2])


def test_per_channel_time_and_frequency_resolution():
    """Channel 0 (25 ms window) separates events in time, channel 2 (100 ms) in frequency."""
    frontend = MultiResolutionLogMel(frames_per_second=100)  # a 10 ms image grid
    torch.manual_seed(0)
    clicks = 1e-4 * torch.randn(1, 2 * SR)
    clicks[0, SR] = clicks[0, SR + 480] = 1.0         # two clicks 30 ms apart
    image = frontend.unnormalized(clicks)[0]           # [3, 128, 200]
    time_dips = [_dip(image[c].exp().sum(dim=0).log()) for c in range(3)]
    t = torch.arange(2 * SR) / SR
    tones = (torch.sin(2 * math.pi * 1000.0 * t) + torch.sin(2 * math.pi * 1100.0 * t))[None]
    image = frontend.unnormalized(tones)[0]
    from edgeaudio.frontend import hz_to_mel, mel_to_hz
    centres = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), 130)[1:-1])  # mel band centres
    near = torch.from_numpy(np.flatnonzero((centres > 850) & (centres < 1250)))
    freq_dips = [_dip(image[c, near, 100]) for c in range(3)]
    print("two clicks 30 ms apart, valley depth per channel:", time_dips,
          "; two tones 100 Hz apart:", freq_dips)
    assert time_dips[0] > 1.5 and time_dips[1] < 0.5 and time_dips[2] < 0.5
    assert freq_dips[0] < 1.0 < freq_dips[1] < freq_dips[2]

    # one 1 kHz tone peaks in the mel band centred nearest 1 kHz, in every channel
    image = frontend.unnormalized(torch.sin(2 * math.pi * 1000.0 * t)[None])[0]
    expected = int(np.argmin(np.abs(centres - 1000.0)))
    assert [int(image[c, :, 100].argmax()) for c in range(3)] == [expected] * 3


# ----------------------------------------------------------------------------- classifier, teacher

def test_audio_classifier_embeddings_pool_to_the_head_input():
    lite0_weights()
    model = ImageNetAudioClassifier("efficientnet_lite0", n_classes=7).eval()
    wave = torch.randn(2, 5 * SR) * 0.1
    with torch.no_grad():
        emb = model.embed(wave)
        assert emb.shape == (2, 8, 1280)                # 250 image frames / 32, rounded up
        assert torch.allclose(emb.mean(dim=1), model.pooled(wave), atol=1e-5)
        assert model(wave).shape == (2, 7)
    assert model.embedding_hop_seconds == pytest.approx(0.64)
    trainable = model.parameter_groups(freeze_blocks=8)
    assert 0 < len(trainable) < len(list(model.parameters()))
    assert not model.backbone._blocks[7]._project_conv.weight.requires_grad
    assert model.backbone._blocks[8]._project_conv.weight.requires_grad
    model.train()
    assert not model.backbone._blocks[7]._bn2.training and model.backbone._blocks[8]._bn2.training


def test_imagenet_teacher_wraps_a_fine_tuned_ensemble(tmp_path):
    from edgeaudio.train.teachers.registry import get_teacher
    from edgeaudio.train.teachers.fitted import FittedTeacher

    labels = ["dog", "rain", "siren"]
    members = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = ImageNetAudioClassifier("efficientnet_lite0", 3, pretrained=False)
        save_member(tmp_path / "ens" / f"member-{seed}.pt", model, labels,
                             metrics={"seed": seed})
        members.append(model.eval())
    reloaded, info = load_member(tmp_path / "ens" / "member-1.pt")
    assert info["labels"] == labels and info["metrics"] == {"seed": 1}

    teacher = get_teacher(str(tmp_path / "ens"))  # a folder of members is a teacher name
    assert isinstance(teacher, FittedTeacher)
    assert (teacher.sample_rate, teacher.dim, teacher.class_names) == (16000, 2560, labels)
    assert teacher.hop_seconds == pytest.approx(0.64)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(2 * SR).astype(np.float32) * 0.1,
             rng.standard_normal(SR).astype(np.float32) * 0.1,
             rng.standard_normal(2 * SR).astype(np.float32) * 0.1]
    embeddings = teacher.embed(clips)
    assert [e.shape for e in embeddings] == [(4, 2560), (2, 2560), (4, 2560)]
    assert all(e.dtype == np.float32 for e in embeddings)
    probs = teacher.predict_batch(clips)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        expected = torch.stack([m(torch.from_numpy(clips[1])[None]).softmax(-1)
                                for m in members]).mean(0)[0].numpy()
    assert np.allclose(teacher.predict(clips[1]), expected, atol=1e-5)
    assert len(teacher.weights_hash) == 64
    assert teacher.cache_identity()["members"] == 2
    with pytest.raises(NotImplementedError):
        teacher.event_vectors()
    single = FittedTeacher(tmp_path / "ens" / "member-0.pt")
    assert single.event_vectors().shape == (3, 1280) and single.dim == 1280
    assert single.weights_hash != teacher.weights_hash

    other = ImageNetAudioClassifier("efficientnet_lite0", 2, pretrained=False)
    save_member(tmp_path / "ens" / "member-9.pt", other, ["a", "b"])
    with pytest.raises(TeacherWeightsError, match="must agree"):
        FittedTeacher(tmp_path / "ens")
    with pytest.raises(TeacherWeightsError, match="not found"):
        FittedTeacher(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherWeightsError, match="no fine-tuned member"):
        FittedTeacher(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherWeightsError, match="cannot read"):
        FittedTeacher(tmp_path / "junk.pt")
