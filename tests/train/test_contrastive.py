"""Contrastive regularization pieces against hand computations and signal facts."""
import math

import numpy as np
import pytest
import torch
from scipy.signal import welch

from edgeaudio.train.contrastive import (NOISE_COLOURS, NOISE_SLOPES, ProjectionHead,
                                         a_weighting_gain, batch_split_mix, coloured_noise,
                                         nt_xent, scale_to_snr)

RATE = 16000


def test_nt_xent_equals_a_hand_computation():
    s = 1 / math.sqrt(2)
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[s, s], [0.0, 1.0]])
    tau = 0.5
    z = [z_a[0], z_a[1], z_b[0], z_b[1]]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {k: float(z[i] @ z[k]) / tau for k in range(4) if k != i}
        total += -math.log(math.exp(sims[positive[i]]) / sum(math.exp(v) for v in sims.values()))
    assert nt_xent(z_a, z_b, tau=tau).item() == pytest.approx(total / 4, rel=1e-6)


def test_nt_xent_prefers_matching_views():
    rng = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=rng), dim=-1)
    shuffled = z[torch.randperm(8, generator=rng)]
    assert nt_xent(z, z, tau=0.1) < nt_xent(z, shuffled, tau=0.1)


@pytest.mark.parametrize("colour", sorted(NOISE_SLOPES))
def test_coloured_noise_has_its_spectral_slope(colour):
    x = coloured_noise(colour, 4 * RATE, RATE, np.random.default_rng(1))
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-4)
    freqs, psd = welch(x, RATE, nperseg=4096)
    band = (freqs > 50) & (freqs < 7000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert slope == pytest.approx(NOISE_SLOPES[colour], abs=0.1)


def test_grey_noise_follows_inverse_a_weighting():
    x = coloured_noise("grey", 4 * RATE, RATE, np.random.default_rng(2))
    freqs, psd = welch(x, RATE, nperseg=4096)
    band = (freqs > 50) & (freqs < 7000)
    expected = -np.log10(a_weighting_gain(freqs[band]))
    measured = np.log10(psd[band])
    gain, _ = np.polyfit(expected, measured, 1)  # measured = expected + constant
    assert gain == pytest.approx(1.0, abs=0.05)
    assert psd[np.argmin(abs(freqs - 100))] > 10 * psd[np.argmin(abs(freqs - 2500))]


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_mixing_hits_the_requested_snr(snr_db):
    rng = np.random.default_rng(3)
    signal = torch.from_numpy(rng.normal(0, 0.3, (2, RATE)).astype(np.float32))
    other = torch.from_numpy(coloured_noise("pink", RATE, RATE, rng)).repeat(2, 1) * 0.01
    scaled = scale_to_snr(signal, other, torch.tensor([snr_db, snr_db]))
    measured = 10 * torch.log10(signal.pow(2).mean(-1) / scaled.pow(2).mean(-1))
    assert torch.allclose(measured, torch.tensor(snr_db), atol=0.5)


def test_batch_split_mix_pairs_halves():
    rng = np.random.default_rng(4)
    waves = torch.from_numpy(rng.normal(0, 0.1, (6, 8000)).astype(np.float32))
    perm, originals, mixed = batch_split_mix(waves, RATE, rng)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(originals, waves[perm])
    assert mixed.shape == waves.shape
    residual = mixed - originals
    # what was added is mostly the partner from the other half (SNR <= 20 dB), not silence
    assert torch.all(residual.pow(2).mean(-1) > originals.pow(2).mean(-1) * 10 ** (-2.1))
    with pytest.raises(ValueError, match="even batch"):
        batch_split_mix(waves[:5], RATE, rng)
    assert set(NOISE_COLOURS) == {"white", "pink", "brown", "blue", "violet", "grey"}


def test_projection_head_is_unit_norm_64d():
    head = ProjectionHead(96)
    z = head(torch.randn(5, 96))
    assert z.shape == (5, 64)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)


# ---------------------------------------------------------------------------- in training
# A tiny student on real clips: 3 ESC-50 classes (folds 1 and 2) labeled, real speech and drum
# one-shots unlabeled (another domain).

from edgeaudio.train.checkpoint import load_checkpoint  # noqa: E402
from edgeaudio.train.data import (DatasetError, load_esc50, select_classes,  # noqa: E402
                                  unlabeled_items)
from edgeaudio.train.config import TrainConfig, TrainError  # noqa: E402
from edgeaudio.train.loop import train  # noqa: E402
from edgeaudio.train.schedule import epoch_order  # noqa: E402

from ..conftest import SHARED, esc50_clip, esc50_rows  # noqa: E402


@pytest.fixture(scope="module")
def labeled_csv(esc50, tmp_path_factory):
    rows = []
    for cat in ("dog", "rooster", "rain"):
        mine = [r for r in esc50_rows() if r["category"] == cat]
        rows += [r for r in mine if r["fold"] == "1"][:2] + \
            [r for r in mine if r["fold"] == "2"][:2]
    path = tmp_path_factory.mktemp("labeled") / "labels.csv"
    path.write_text("path,label,fold\n" + "".join(
        f"{esc50_clip(r['filename'])},{r['category']},{r['fold']}\n" for r in rows))
    return path


def other_domain_folder(root):
    """3 spoken digits and 3 drum one-shots, nested (the pool is searched recursively)."""
    fsdd, drums = SHARED / "data" / "fsdd" / "recordings", SHARED / "data" / "drums" / "drumkits"
    if not fsdd.is_dir() or not drums.is_dir():
        pytest.skip(f"FSDD / drums not found under {SHARED / 'data'}")
    import shutil
    for clip in sorted(fsdd.glob("*.flac"))[:3]:
        (root / "speech").mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / "speech" / clip.name)
    for clip in sorted(drums.rglob("*.flac"))[:3]:
        (root / "drums" / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / "drums" / clip.parent.name / clip.name)
    (root / "notes.txt").write_text("not audio: ignored")
    return root


@pytest.fixture(scope="module")
def unlabeled_dir(tmp_path_factory):
    return other_domain_folder(tmp_path_factory.mktemp("unlabeled"))


def tiny_config(data, **kw):
    base = dict(data=str(data), fold=2, student="tiny", epochs=3, batch_size=4, crop_seconds=1.0,
                seed=2, warmup_epochs=1)
    return TrainConfig(**{**base, **kw})


def run(cfg, out, **kw):
    torch.set_num_threads(1)
    return train(cfg, out, progress=False, **kw)


def test_contrastive_training_resumes_exactly_and_keeps_the_head_out_of_the_student(
        labeled_csv, unlabeled_dir, tmp_path):
    cfg = tiny_config(labeled_csv, contrastive=True, unlabeled=[str(unlabeled_dir)],
                      contrastive_warmup=1)
    full = run(cfg, tmp_path / "full")
    assert run(cfg, tmp_path / "killed", stop_after_epoch=2) == {"stopped_after_epoch": 2}
    resumed = run(cfg, tmp_path / "killed", resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for key, value in a["train_state"]["aux"]["projection"].items():
        assert torch.equal(value, b["train_state"]["aux"]["projection"][key]), key
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])
    # a warm-up epoch on labels alone, then the NT-Xent term
    assert [e["contrastive"] for e in full["history"]][0] == 0.0
    assert all(e["contrastive"] > 0 for e in full["history"][1:])
    assert full["contrastive"]["unlabeled"]["items"] == 6
    assert full["contrastive"]["warmup_epochs"] == 1 and full["contrastive"]["weight"] == 0.05
    # the projection head trains alongside but is no part of the student (nor of an export)
    assert not any(k.startswith(("fc.", "bn.", "projection")) for k in a["model_state"])
    assert set(a["train_state"]["aux"]["projection"]) >= {"fc.weight", "bn.running_mean"}


def test_during_warm_up_a_contrastive_run_is_the_plain_run(labeled_csv, unlabeled_dir,
                                                           tmp_path):
    plain = tiny_config(labeled_csv)
    contrastive = tiny_config(labeled_csv, contrastive=True, unlabeled=[str(unlabeled_dir)],
                              contrastive_warmup=2)
    run(plain, tmp_path / "plain", stop_after_epoch=2)
    run(contrastive, tmp_path / "contrastive", stop_after_epoch=2)
    a = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "contrastive" / "checkpoint.pt")
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert "contrastive" not in a["train_state"]["history"][0]


def test_held_out_clips_never_join_the_unlabeled_pool(labeled_csv, tmp_path):
    # the labeled CSV itself as the unlabeled pool: its fold-2 (test) clips and the
    # validation clips are left out
    cfg = tiny_config(labeled_csv, epochs=2, contrastive=True, unlabeled=[str(labeled_csv)],
                      contrastive_warmup=0)
    metrics = run(cfg, tmp_path / "r")
    held_out = metrics["n_test"] + metrics["n_validation"]
    assert metrics["n_test"] == 6 and metrics["n_validation"] > 0
    assert metrics["contrastive"]["unlabeled"]["items"] == 12 - held_out
    assert metrics["contrastive"]["unlabeled"]["held_out_clips_left_out"] == held_out


def test_fixed_steps_per_epoch_cycle_through_a_small_labeled_set(labeled_csv, unlabeled_dir,
                                                                tmp_path):
    order = epoch_order(np.arange(10, 16), 20, np.random.default_rng(0))
    assert len(order) == 24  # four passes, each a permutation of the six
    assert all(sorted(order[k:k + 6]) == list(range(10, 16)) for k in range(0, 24, 6))
    # 6 training clips, batches of 4, 5 steps an epoch: every batch full
    cfg = tiny_config(labeled_csv, epochs=2, steps_per_epoch=5, contrastive=True,
                      unlabeled=[str(unlabeled_dir)], contrastive_warmup=0)
    metrics = run(cfg, tmp_path / "r")
    assert len(metrics["history"]) == 2 and metrics["history"][0]["contrastive"] > 0


def test_esc10_labeled_and_esc40_unlabeled_from_the_training_folds(esc50):
    dataset = load_esc50(esc50)
    esc10, rest = select_classes(dataset, "esc10")
    assert len(esc10.labels) == 10 and len(esc10.items) == 400
    assert {"dog", "rooster", "rain", "crying_baby", "chainsaw"} <= set(esc10.labels)
    assert len(rest.labels) == 40 and len(rest.items) == 1600
    pool = unlabeled_items(["rest"], rest, held_out_fold=1)
    assert len(pool) == 1280 and all(item.fold != 1 for item in pool)
    labeled = {item.path for item in esc10.items}
    assert not any(item.path in labeled for item in pool)
    two, _ = select_classes(dataset, "dog, rain")
    assert two.labels == ["dog", "rain"] and len(two.items) == 80
    with pytest.raises(DatasetError, match="unknown class"):
        select_classes(dataset, "dog,unicorn")
    assert select_classes(dataset, None)[0] is dataset


@pytest.mark.parametrize("kw, message", [
    (dict(contrastive=True), "--contrastive needs unlabeled audio"),
    (dict(unlabeled=["x"]), "--unlabeled is used by --contrastive only"),
    (dict(contrastive=True, unlabeled=["rest"]), "give --classes"),
    (dict(contrastive=True, unlabeled=["x"], contrastive_warmup=3), "leaves no epoch"),
])
def test_contrastive_settings_that_cannot_run(kw, message, tmp_path):
    with pytest.raises(TrainError, match=message):
        tiny_config(tmp_path, **kw).validate()
