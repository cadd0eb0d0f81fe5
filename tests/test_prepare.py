"""Tests for the prepare step (python -m alexnet_cuda.prepare) and the trainer's shard reader.

A tiny ImageFolder of real photos (scikit-learn's two sample photos, cropped and rescaled at
random, saved as JPEG and PNG; 3 classes) is prepared at 32x32; everything runs on the CPU
in a few seconds.
"""

import json
import os
import socket
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
from PIL import Image  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

from alexnet_cuda.train import TrainConfig, train  # noqa: E402
from alexnet_cuda.train import data as Dt  # noqa: E402
from alexnet_cuda.train import distributed as Dist  # noqa: E402
from alexnet_cuda.train import shards as S  # noqa: E402
from alexnet_cuda.train.preprocess import main as prepare_main  # noqa: E402
from alexnet_cuda.train.preprocess import prepare  # noqa: E402
from alexnet_cuda.train.training_run import setup_run  # noqa: E402

IMAGE, CROP, CLASSES = 32, 24, 3

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


class Net(nn.Module):
    def __init__(self, dropout=0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(8 * 4 * 4, CLASSES),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


def _model(dropout=0.5):
    torch.manual_seed(0)
    return Net(dropout)


def write_photo_folder(root, rng, per_class=(7, 3)):
    """root/{train,val}/class<c>/: random crops of the sample photos, rescaled to 30..60 px."""
    photos = load_sample_images().images
    for split, n in zip(("train", "val"), per_class):
        for c in range(CLASSES):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d)
            for i in range(n):
                photo = photos[(c + i) % len(photos)]
                h, w = rng.integers(60, 300, size=2)
                top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
                im = Image.fromarray(photo[top : top + h, left : left + w]).resize(
                    tuple(int(v) for v in rng.integers(30, 60, size=2)), Image.BILINEAR
                )
                if i % 2:
                    im.save(os.path.join(d, f"{i}.png"))
                else:
                    im.save(os.path.join(d, f"{i}.jpg"), quality=int(rng.integers(60, 95)))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_folder(str(tmp_path_factory.mktemp("photos")), np.random.default_rng(0))


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared"))
    prepare(photos, out, size=IMAGE, formats=["raw", "jpeg"], shard_size=4, workers=0, progress="off")
    return out


def _cfg(data, tmp_path, **kw):
    base = dict(
        data=data,
        image_size=IMAGE,
        crop=CROP,
        epochs=1,
        batch_size=4,
        workers=0,
        output=str(tmp_path / "run"),
        progress="off",
        tensorboard=False,
        plot=False,
        log_every=1,
        input_scale=1 / 64,
        schedule="constant",
    )
    base.update(kw)
    return TrainConfig(**base)


def _folder_images(root, split):
    classes = Dt.find_classes(os.path.join(root, "train"))
    ds = Dt.ImageFolderUint8(Dt.make_samples(os.path.join(root, split), classes), IMAGE)
    return Dt.collate_uint8([ds[i] for i in range(len(ds))])


# ----------------------------------------------------------------------------------------
# prepare -> the same pixels, labels and statistics as the ImageFolder path
# ----------------------------------------------------------------------------------------
def test_shards_hold_the_imagefolder_pixels_and_stats(photos, prepared):
    man = S.read_manifest(prepared)
    assert man["classes"] == [f"class{c}" for c in range(CLASSES)] and man["formats"] == ["jpeg", "raw"]
    assert man["splits"]["train"]["count"] == 21 and man["splits"]["val"]["count"] == 9
    assert [s["count"] for s in man["splits"]["train"]["shards"]] == [4, 4, 4, 4, 4, 1]
    for split in ("train", "val"):
        ref = _folder_images(photos, split)
        raw = S.PreparedRaw(prepared, man["splits"][split], IMAGE)
        got = S.collate_prepared(raw.__getitems__(list(range(len(raw)))))
        assert torch.equal(got.images, ref.images) and torch.equal(got.labels, ref.labels)
        assert torch.equal(raw[5][0], ref.images[5])
    # the statistics of the same pass equal compute_stats' over the decoded images
    stats = Dt.DatasetStats.from_state_dict(torch.load(os.path.join(prepared, S.STATS_FILE), weights_only=True))
    ref = Dt.compute_stats([_folder_images(photos, "train")])
    assert stats.count == ref.count == 21
    torch.testing.assert_close(stats.mean_image, ref.mean_image, rtol=0, atol=0)
    torch.testing.assert_close(stats.eigvals, ref.eigvals, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.eigvecs, ref.eigvecs, rtol=1e-5, atol=1e-6)


def test_jpeg_shards_are_webdataset_tars_close_to_the_raw_pixels(prepared):
    man = S.read_manifest(prepared)
    split = man["splits"]["train"]
    raw = S.PreparedRaw(prepared, split, IMAGE)
    jpg = S.PreparedJpeg(prepared, split, IMAGE)
    # stdlib tarfile reads it: KEY.jpg + KEY.cls, the class index as text
    with tarfile.open(os.path.join(prepared, "train-00001.tar")) as tar:
        names = tar.getnames()
        assert names[:2] == ["000000004.jpg", "000000004.cls"] and len(names) == 8
        assert int(tar.extractfile("000000005.cls").read()) == int(raw.index.labels[5])
        first = tar.extractfile("000000004.jpg").read()
    assert first == jpg.read(4)
    for i in range(len(raw)):
        img, label = jpg[i]
        assert label == raw[i][1] and img.shape == (3, IMAGE, IMAGE)
        assert (img.float() - raw[i][0].float()).abs().mean() < 8  # quality 90: lossy, but close
    b = S.PreparedJpeg(prepared, split, IMAGE, raw_bytes=True)[3]  # the --gpu-decode items
    assert b[2] is True and torch.equal(Dt.decode_batch(Dt.collate_bytes([b]), "cpu", IMAGE).images[0], jpg[3][0])


def test_one_epoch_from_shards_equals_the_imagefolder_path_bit_for_bit(photos, prepared, tmp_path):
    stats = str(tmp_path / "stats.pt")  # one statistics file for both: the losses then compare exactly
    ref = train(_cfg(photos, tmp_path / "a", stats_file=stats), model=_model())
    got = train(_cfg(prepared, tmp_path / "b", stats_file=stats), model=_model())
    assert len(ref["step_losses"]) == 6 and got["step_losses"] == ref["step_losses"]
    assert got["history"][0]["val_images"] == ref["history"][0]["val_images"] == 9
    assert got["history"][0]["val_loss"] == ref["history"][0]["val_loss"]
    # without --stats-file the prepared folder's own statistics are used, and training runs
    own = train(_cfg(prepared, tmp_path / "c", workers=1), model=_model())
    assert len(own["step_losses"]) == 6 and all(np.isfinite(own["step_losses"]))


def test_exact_resume_from_shards(prepared, tmp_path):
    full = train(_cfg(prepared, tmp_path / "full", epochs=2), model=_model())
    train(_cfg(prepared, tmp_path / "part", epochs=2, max_steps=4), model=_model())
    rest = train(_cfg(prepared, tmp_path / "part", epochs=2, resume=str(tmp_path / "part" / "run")), model=_model())
    assert rest["step_losses"] == full["step_losses"][4:]


def test_jpeg_only_folder_trains(photos, tmp_path):
    out = str(tmp_path / "jpeg")
    prepare(photos, out, size=IMAGE, formats=["jpeg"], shard_size=8, workers=2, progress="off")
    assert not any(n.endswith(".npy") and n.count(".") == 1 for n in os.listdir(out))
    res = train(_cfg(out, tmp_path, workers=1), model=_model())
    assert len(res["step_losses"]) == 6 and res["history"][0]["val_images"] == 9
    # statistics of a subset, computed from the shards (and cached to --stats-file)
    stats = str(tmp_path / "subset.pt")
    res = train(_cfg(out, tmp_path / "subset", stats_max_images=10, stats_file=stats, gpu_decode=True), model=_model())
    assert len(res["step_losses"]) == 6 and torch.load(stats)["count"] == 10


# ----------------------------------------------------------------------------------------
# resume, damage, bad images
# ----------------------------------------------------------------------------------------
def _snapshot(folder):
    return {
        n: (os.stat(os.path.join(folder, n)).st_mtime_ns, open(os.path.join(folder, n), "rb").read())
        for n in sorted(os.listdir(folder))
        if n != S.MANIFEST
    }


def test_prepare_killed_halfway_resumes(photos, tmp_path):
    out = str(tmp_path / "out")
    prepare(photos, out, size=IMAGE, formats=["raw", "jpeg"], shard_size=4, workers=0, progress="off")
    before = _snapshot(out)
    # what a kill leaves: no manifest, the last shards without their record (written last),
    # one of their data files half written, and a temporary file
    os.remove(os.path.join(out, S.MANIFEST))
    for name in ("train-00004", "train-00005", "val-00002"):
        os.remove(os.path.join(out, f"{name}.json"))
    with open(os.path.join(out, "train-00004.npy"), "r+b") as f:
        f.truncate(1000)
    open(os.path.join(out, ".train-00005.tar.tmp.999"), "wb").write(b"partial")
    prepare(photos, out, size=IMAGE, formats=["raw", "jpeg"], shard_size=4, workers=0, progress="off")
    after = _snapshot(out)
    assert sorted(after) == sorted(before)  # the temporary file is gone
    for name, (mtime, content) in before.items():
        assert after[name][1] == content, name  # the same bytes (the writes are deterministic)
        remade = name.startswith(("train-00004", "train-00005", "val-00002")) or name == S.STATS_FILE
        assert (after[name][0] != mtime) == remade, name  # finished shards were kept, not rewritten
    assert S.verify(out) == []


def test_damaged_shard_is_reported_by_name(photos, tmp_path, caplog, capsys):
    out = str(tmp_path / "out")
    prepare(photos, out, size=IMAGE, formats=["raw"], shard_size=4, workers=0, progress="off")
    path = os.path.join(out, "train-00002.npy")
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 0xFF  # one flipped bit pattern in the pixels: same size, other content
    open(path, "wb").write(bytes(data))
    assert prepare_main(["--verify", out]) == 1
    err = capsys.readouterr().err
    assert "train-00002.npy: sha256" in err and "train-00001" not in err
    with open(os.path.join(out, "val-00001.npy"), "r+b") as f:  # truncated: the trainer refuses at start
        f.truncate(500)
    with pytest.raises(S.PreparedDataError, match="val-00001.npy: 500 bytes"):
        train(_cfg(out, tmp_path), model=_model())
    caplog.set_level("WARNING", logger="alexnet_cuda.prepare")
    prepare(photos, out, size=IMAGE, formats=["raw"], shard_size=4, workers=0, progress="off")
    assert "train-00002 is damaged" in caplog.text and "val-00001 is damaged" in caplog.text
    assert S.verify(out) == []


def test_bad_images_are_counted_and_listed_never_fatal(tmp_path):
    root = write_photo_folder(str(tmp_path / "src"), np.random.default_rng(1), per_class=(3, 1))
    d = os.path.join(root, "train", "class1")
    open(os.path.join(d, "corrupt.jpg"), "wb").write(b"\xff\xd8\xff\xe0 not a jpeg")
    good = open(os.path.join(root, "train", "class0", "1.png"), "rb").read()
    open(os.path.join(d, "damaged.png"), "wb").write(good[:60] + bytes(20) + good[80:])  # libpng's crash
    Image.fromarray(np.random.default_rng(2).integers(0, 65535, (40, 50), dtype=np.uint16)).save(
        os.path.join(d, "grey16.png")
    )  # 16-bit: becomes 8-bit RGB, not an error
    with open(os.path.join(os.fsencode(d), b"bad\xff.png"), "wb") as f:  # a name that is not UTF-8
        f.write(open(os.path.join(d, "1.png"), "rb").read())
    out = str(tmp_path / "out")
    man = prepare(root, out, size=IMAGE, formats=["raw"], shard_size=2, workers=2, progress="off")
    bad = man["splits"]["train"]["unreadable"]
    assert sorted(u["file"] for u in bad) == [
        os.path.join("class1", "corrupt.jpg"),
        os.path.join("class1", "damaged.png"),
    ]
    assert man["splits"]["train"]["count"] == 9 + 2
    assert man["train_images_per_class"] == [3, 5, 3]
    json.dumps(man)  # the manifest (and the records) hold printable names only


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork",
    reason="the crashing decoder is patched into the workers by fork",
)
def test_a_decoder_crash_costs_only_its_image(photos, tmp_path, monkeypatch):
    import faulthandler
    import signal

    from alexnet_cuda.train import preprocess as P

    real = P.decode_image

    def crashing(path, size):  # a decoder dying in native code, as libpng did on a damaged PNG
        if path.endswith(os.path.join("class1", "1.png")):
            faulthandler.disable()  # pytest's traceback dump of the dying worker: noise here
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, size)

    monkeypatch.setattr(P, "decode_image", crashing)
    man = prepare(photos, str(tmp_path), size=IMAGE, formats=["raw"], shard_size=4, workers=2, progress="off")
    assert [u["file"] for u in man["splits"]["train"]["unreadable"]] == [os.path.join("class1", "1.png")]
    assert man["splits"]["train"]["count"] == 20 and S.verify(str(tmp_path)) == []


def test_prepare_rejects_bad_arguments(photos, tmp_path):
    with pytest.raises(SystemExit):
        prepare_main(["--data", photos, "--out", str(tmp_path), "--format", "png"])
    with pytest.raises(SystemExit):
        prepare_main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        prepare_main(["--data", photos, "--out", str(tmp_path), "--quality", "0"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        prepare_main(["--data", photos, "--out", str(tmp_path / "file")])
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)  # a class folder without images: exit 2
    assert prepare_main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2


# ----------------------------------------------------------------------------------------
# DDP: 2 processes, gloo on CPU
# ----------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_batch_grads(run):
    """Gradients of the loss on the first batch (mean-subtracted, centre crop: no random draws)."""
    batch = next(iter(run.train_loader))
    x = run.augment.normalize(batch.images)[..., 4 : 4 + CROP, 4 : 4 + CROP]
    F.cross_entropy(run.net(x), batch.labels).backward()
    return {k: p.grad.clone() for k, p in run.model.named_parameters()}


def _epoch_images(run, epoch):
    run.sampler.set_epoch(epoch)
    return [img for b in run.train_loader for img in b.images]


def _ddp_worker(rank, world, port, out_dir, prepared):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    info = Dist.init_distributed("cpu")
    try:
        import pathlib

        cfg = _cfg(prepared, pathlib.Path(out_dir) / f"r{rank}", batch_size=8)
        run = setup_run(cfg, _model(dropout=0.0), info, step_fn=None)
        run.sampler.set_epoch(0)
        torch.save(
            {"grads": _first_batch_grads(run), "epoch0": _epoch_images(run, 0), "epoch1": _epoch_images(run, 1)},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        Dist.cleanup(info)


def test_ddp_ranks_read_disjoint_shards_and_match_one_process(prepared, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), prepared), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one = setup_run(_cfg(prepared, tmp_path / "one", batch_size=8), _model(dropout=0.0), Dist.DistInfo(), step_fn=None)
    one.sampler.set_epoch(0)
    grads = _first_batch_grads(one)
    for k, g in grads.items():  # DDP averages the two halves' gradients: the combined batch's
        torch.testing.assert_close(ranks[0]["grads"][k], g, rtol=1e-5, atol=1e-7)
    for epoch in ("epoch0", "epoch1"):
        keys = [{img.numpy().tobytes() for img in r[epoch]} for r in ranks]
        whole = {img.numpy().tobytes() for img in _epoch_images(one, int(epoch[-1]))}
        assert len(ranks[0][epoch]) == len(ranks[1][epoch]) == 11  # 21 images padded to 22
        # disjoint but for the one image the sampler repeats to pad the shards equally
        assert len(keys[0] & keys[1]) <= 1 and keys[0] | keys[1] == whole
    assert [i.sum() for i in ranks[0]["epoch0"]] != [i.sum() for i in ranks[0]["epoch1"]]  # reshuffled
