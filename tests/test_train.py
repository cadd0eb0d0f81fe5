"""Tests for alexnet_cuda.train (CPU only, a couple of minutes on 2 cores).

A tiny generated ImageFolder (3 classes, JPEG and PNG, one corrupt file) drives the real
pipeline; a small stand-in model replaces AlexNet everywhere except the fused-vs-unfused
test.
"""

import math
import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402  (torchvision depends on Pillow)

from alexnet_cuda.train import PaperSGD, PlateauSchedule, TrainConfig, train  # noqa: E402
from alexnet_cuda.train import augment as A  # noqa: E402
from alexnet_cuda.train import data as Dt  # noqa: E402
from alexnet_cuda.train import distributed as Dist  # noqa: E402
from alexnet_cuda.train.checkpoint import load_checkpoint  # noqa: E402
from alexnet_cuda.train.evaluate import evaluate, ten_crop_probs, topk_correct  # noqa: E402
from alexnet_cuda.train.optim import MilestoneSchedule  # noqa: E402

IMAGE, CROP, CLASSES = 32, 24, 3

# torchvision 0.29 deprecates its codecs (TorchCodec replaces them); they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


class StandIn(nn.Module):
    """conv/relu/pool/dropout/linear: small, but with dropout so resume must restore the RNG."""

    def __init__(self, num_classes=CLASSES, crop=CROP):
        super().__init__()
        s = ((crop - 5) // 2 + 1 - 3) // 2 + 1
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(8 * s * s, 16),
            nn.ReLU(),
            nn.Linear(16, num_classes),
        )
        for m in self.modules():  # inputs are ~0..255 minus the mean: keep activations sane
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


def _model(seed=0, **kw):
    torch.manual_seed(seed)  # the same initial weights in every run that is compared
    return StandIn(**kw)


def _write_image(path, rng, fmt):
    h, w = rng.integers(28, 48, size=2)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/train/<c>/ (8 images per class) and root/val/<c>/ (3 per class), plus a corrupt JPEG."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in range(CLASSES):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                fmt = "JPEG" if i % 2 == 0 else "PNG"
                _write_image(d / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", rng, fmt)
    (root / "train" / "class1" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return str(root)


def _cfg(folder, tmp_path, **kw):
    base = dict(
        data=folder,
        image_size=IMAGE,
        crop=CROP,
        epochs=2,
        batch_size=8,
        workers=0,
        output=str(tmp_path / "run"),
        stats_file=str(tmp_path.parent / "stats.pt"),
        progress="off",
        tensorboard=False,
        plot=False,
        log_every=1,
        input_scale=1.0,
        schedule="plateau",
        lr_patience=0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------
def test_end_to_end_with_corrupt_file_and_workers(folder, tmp_path):
    cfg = _cfg(folder, tmp_path, workers=1, epochs=2)
    res = train(cfg, model=_model())
    assert len(res["history"]) == 2
    assert res["skipped_train"] == 1  # the corrupt file, counted once (distinct files), never fatal
    assert all(h["train_skipped"] == 1 for h in res["history"])
    steps_per_epoch = math.ceil(25 / 8)
    assert len(res["step_losses"]) == 2 * steps_per_epoch
    assert all(math.isfinite(v) for v in res["step_losses"])
    last = res["history"][-1]
    for k in ("val_top1_err", "val_top5_err", "val10_top1_err", "val10_top5_err", "lr"):
        assert k in last
    assert last["val_images"] == 9
    assert os.path.exists(os.path.join(cfg.output, "last.pt"))
    with open(os.path.join(cfg.output, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 3
    ck = load_checkpoint(os.path.join(cfg.output, "last.pt"))
    assert ck["epoch"] == 2 and ck["step"] == 2 * steps_per_epoch and ck["epoch_step"] == 0
    assert set(ck["rng"]) >= {"torch", "numpy", "python"}
    # mean/PCA were cached and are reused
    stats = Dt.DatasetStats.from_state_dict(torch.load(cfg.stats_file, weights_only=True))
    assert stats.mean_image.shape == (3, IMAGE, IMAGE) and stats.count == 24


def test_cli_small_arch(folder, tmp_path):
    from alexnet_cuda.train.cli import main

    out = tmp_path / "cli"
    rc = main(
        ["--data", folder, "--output", str(out), "--stats-file", str(tmp_path.parent / "stats.pt")]
        + f"--arch small --width 8 --image-size {IMAGE} --crop {CROP} --epochs 1 --batch-size 8 --workers 0".split()
        + "--no-ten-crop --progress off --no-tensorboard --no-plot --schedule milestones --lr-milestones 0".split()
        + "--amp bf16 --channels-last".split()
    )
    assert rc == 0
    ck = load_checkpoint(str(out / "last.pt"))
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001)  # milestone at epoch 0


# ----------------------------------------------------------------------------------------
# exact resume (and Ctrl-C)
# ----------------------------------------------------------------------------------------
def test_resume_equals_uninterrupted_bit_for_bit(folder, tmp_path):
    full = train(_cfg(folder, tmp_path / "a", epochs=3), model=_model())
    losses = full["step_losses"]
    assert len(losses) == 12

    def ctrl_c_at_step_2(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled between steps: save and exit

    cfg = _cfg(folder, tmp_path / "b", epochs=3)
    before = signal.getsignal(signal.SIGINT)
    part1 = train(cfg, model=_model(), on_step=ctrl_c_at_step_2)
    assert part1["interrupted"] and part1["step_losses"] == losses[:2]
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    # resume mid-epoch, stop again mid-epoch 2 with --max-steps, then finish
    cfg.resume, cfg.max_steps = cfg.output, 6
    part2 = train(cfg, model=_model())
    assert not part2["interrupted"]
    cfg.max_steps = 8  # exactly the end of epoch 2, before its evaluation
    part2b = train(cfg, model=_model())
    cfg.max_steps = 0
    part3 = train(cfg, model=_model())
    resumed = part1["step_losses"] + part2["step_losses"] + part2b["step_losses"] + part3["step_losses"]
    assert resumed == losses  # bit for bit
    # epoch means: same numbers, summed in a different grouping across the interruptions
    assert [h["train_loss"] for h in part3["history"]] == pytest.approx(
        [h["train_loss"] for h in full["history"]], rel=1e-12
    )
    a = load_checkpoint(os.path.join(full["output"], "last.pt"))["model"]
    b = load_checkpoint(os.path.join(cfg.output, "last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_from_a_terminal_saves_and_exits_cleanly(folder, tmp_path):
    """SIGINT to the whole process group (what Ctrl-C does), DataLoader workers included."""
    import subprocess
    import sys
    import time

    out = tmp_path / "ctrlc"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [
        sys.executable,
        "-m",
        "alexnet_cuda.train",
        "--data",
        folder,
        "--arch",
        "small",
        "--width",
        "8",
        "--image-size",
        str(IMAGE),
        "--crop",
        str(CROP),
        "--epochs",
        "100000",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--output",
        str(out),
        "--stats-file",
        str(tmp_path / "stats.pt"),
        "--progress",
        "off",
        "--no-tensorboard",
        "--no-plot",
        "--log-every",
        "1",
        # raw 0..255 inputs make this small net diverge within ~6 steps (the NaN guard stops it)
        "--input-scale",
        "0.015625",
    ]
    # cwd: not the repository root, whose source tree (no compiled _C) `python -m` would
    # put first on sys.path, ahead of the installed package.
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        deadline = time.time() + 120
        while not (out / "steps.csv").exists() or len((out / "steps.csv").read_text().splitlines()) < 10:
            assert proc.poll() is None and time.time() < deadline, (
                proc.stdout.read() if proc.poll() is not None else "timeout"
            )
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "SIGINT received" in output and "Traceback" not in output, output
    ck = load_checkpoint(str(out / "last.pt"))
    assert ck["step"] >= 9


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "x.pt")
    Dt.atomic_torch_save({"v": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        Dt.atomic_torch_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["x.pt"]  # no temporary file left behind


# ----------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------
def _orthonormal(seed=0):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()


def test_augment_matches_per_image_reference_and_bounds():
    n, s, c = 64, 40, 33
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g)
    mean = torch.rand(3, s, s, generator=g) * 255
    vecs, vals = _orthonormal(), torch.tensor([0.2, 0.02, 0.005])
    aug = A.GPUAugment(mean, vals, vecs, crop=c, pca_std=0.1, input_scale=0.5)
    out = aug(imgs, generator=torch.Generator().manual_seed(1))
    d = aug.last_draws
    assert out.shape == (n, 3, c, c) and out.dtype == torch.float32
    assert aug(torch.empty(0, 3, 0, 0, dtype=torch.uint8)).shape == (0, 3, c, c)  # all-corrupt batch
    assert int(d.top.min()) >= 0 and int(d.top.max()) <= s - c
    assert int(d.left.min()) >= 0 and int(d.left.max()) <= s - c
    for i in range(n):
        top, left = int(d.top[i]), int(d.left[i])
        ref = imgs[i].float() - mean
        ref = ref[:, top : top + c, left : left + c]
        if d.flip[i]:
            ref = ref.flip(-1)
        off = (vecs @ (d.alpha[i] * vals)) * 255
        ref = (ref + off[:, None, None]) * 0.5
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-4)


def test_augment_statistics():
    n, s, c = 20000, 12, 9
    d = A.draw(n, s, c, torch.Generator().manual_seed(3), pca_std=0.1)
    # crop offsets: uniform over all s - c + 1 positions
    counts = torch.bincount(d.top, minlength=s - c + 1).float()
    assert counts.numel() == s - c + 1 and counts.min() > 0.8 * n / (s - c + 1)
    counts = torch.bincount(d.left, minlength=s - c + 1).float()
    assert counts.numel() == s - c + 1 and counts.min() > 0.8 * n / (s - c + 1)
    # flips: a fair coin (5 sigma = 0.018)
    assert abs(d.flip.float().mean().item() - 0.5) < 0.02
    # PCA noise: offset = P (alpha * lambda) * 255, alpha ~ N(0, 0.1) => cov = P diag((0.1 lambda 255)^2) P^T
    vecs, vals = _orthonormal(1), torch.tensor([0.3, 0.05, 0.01])
    off = A.pca_offset(d.alpha, vals, vecs).double()
    assert abs(d.alpha.std().item() - 0.1) < 0.003
    expected = vecs.double() @ torch.diag((0.1 * vals.double() * 255) ** 2) @ vecs.double().T
    cov = torch.cov(off.T)
    assert torch.allclose(off.mean(0), torch.zeros(3, dtype=torch.float64), atol=0.05 * 0.1 * 0.3 * 255)
    assert torch.allclose(cov, expected, rtol=0.05, atol=0.02 * expected.abs().max().item())
    # the noise lies along the principal directions with the right spread
    proj = off @ vecs.double()
    assert torch.allclose(proj.std(0), 0.1 * vals.double() * 255, rtol=0.03)


def test_ten_crop_against_slow_reference():
    import torchvision.transforms.functional as TF

    torch.manual_seed(0)
    model = StandIn(num_classes=7).eval()
    x = torch.randn(5, 3, IMAGE, IMAGE) * 50
    probs = ten_crop_probs(model, x, CROP)
    with torch.no_grad():
        for i in range(5):
            views = TF.ten_crop(x[i], CROP)  # 4 corners + centre, then the flipped five
            ref = torch.stack([F.softmax(model(v[None]), 1)[0] for v in views]).mean(0)
            torch.testing.assert_close(probs[i], ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(A.ten_crops(x, CROP)[4], A.center_crop(x, CROP))
    # top-k counting and the evaluate() driver
    labels = torch.tensor([0, 1, 2, 3, 4])
    batch = Dt.Batch(torch.randint(0, 256, (5, 3, IMAGE, IMAGE), dtype=torch.uint8), labels)
    res = evaluate(model, [batch], lambda im: im.float(), CROP, ten_crop=True)
    with torch.no_grad():
        p = ten_crop_probs(model, batch.images.float(), CROP)
        logits = model(A.center_crop(batch.images.float(), CROP))
    assert (res.top1_10crop, res.top5_10crop) == tuple(topk_correct(p, labels))
    assert (res.top1, res.top5) == tuple(topk_correct(logits, labels))


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
def test_gpu_decode_path_matches_worker_path_on_cpu(folder):
    samples = Dt.make_samples(os.path.join(folder, "train"), Dt.find_classes(os.path.join(folder, "train")))
    assert len(samples) == 25
    ref = Dt.collate_uint8([Dt.ImageFolderUint8(samples, IMAGE)[i] for i in range(len(samples))])
    raw = Dt.collate_bytes([Dt.ImageFolderBytes(samples)[i] for i in range(len(samples))])
    got = Dt.decode_batch(raw, torch.device("cpu"), IMAGE)
    assert ref.skipped == 1 and got.skipped == 1
    assert torch.equal(ref.labels, got.labels) and torch.equal(ref.images, got.images)
    assert ref.images.shape == (24, 3, IMAGE, IMAGE)


def test_stats_mean_and_pca():
    # two colours along a known direction: the PCA must find it
    g = torch.Generator().manual_seed(0)
    t = torch.rand(32, 1, 8, 8, generator=g)
    direction = torch.tensor([0.6, 0.8, 0.0])
    imgs = (100 + 120 * t * direction[None, :, None, None]).round().to(torch.uint8)
    stats = Dt.compute_stats([Dt.Batch(imgs[:16], torch.zeros(16)), Dt.Batch(imgs[16:], torch.zeros(16))])
    torch.testing.assert_close(stats.mean_image, imgs.double().mean(0).float())
    assert abs(abs(float(stats.eigvecs[:, 0] @ direction)) - 1) < 1e-3
    assert stats.eigvals[1] < 1e-3 * stats.eigvals[0]
    assert stats.mean("channel").shape == (3, 1, 1)


def test_sampler_shards_and_resumes():
    full = Dist.ResumableDistributedSampler(10, 1, 0, seed=5)
    full.set_epoch(3)
    order = list(full)
    assert sorted(order) == list(range(10))
    full.set_epoch(3, start=4)
    assert list(full) == order[4:] and len(full) == 6
    shards = [Dist.ResumableDistributedSampler(10, 3, r, seed=5) for r in range(3)]
    for s in shards:
        s.set_epoch(3)
    got = [i for s in shards for i in s]
    assert len(got) == 12 and set(got) == set(range(10))  # padded to equal shards


# ----------------------------------------------------------------------------------------
# optimiser and schedule
# ----------------------------------------------------------------------------------------
def test_paper_sgd_equals_torch_sgd_at_constant_lr_and_differs_at_a_drop():
    torch.manual_seed(0)
    w0 = torch.randn(20)
    grads = [torch.randn(20) for _ in range(6)]
    p1, p2 = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    ours = PaperSGD([p1], lr=0.01, momentum=0.9, weight_decay=5e-4)
    ref = torch.optim.SGD([p2], lr=0.01, momentum=0.9, weight_decay=5e-4)
    for g in grads[:4]:
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p1.data, p2.data, rtol=0, atol=1e-7)
    # the paper's rule, by hand, across a drop to lr/10
    w, v = w0.clone().double(), torch.zeros(20, dtype=torch.float64)
    for i, g in enumerate(grads):
        lr = 0.01 if i < 4 else 0.001
        v = 0.9 * v - 5e-4 * lr * w - lr * g.double()
        w = w + v
    for g in ours.param_groups + ref.param_groups:
        g["lr"] = 0.001
    for g in grads[4:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p1.data.double(), w, rtol=0, atol=1e-6)
    # torch's form shrinks the old momentum 10x at the drop: visibly different weights
    assert (p1.data - p2.data).abs().max() > 1e-4
    # foreach and per-tensor loops agree exactly
    p3 = nn.Parameter(w0.clone())
    loop = PaperSGD([p3], lr=0.01, foreach=False)
    p4 = nn.Parameter(w0.clone())
    fe = PaperSGD([p4], lr=0.01, foreach=True)
    for g in grads:
        p3.grad, p4.grad = g.clone(), g.clone()
        loop.step()
        fe.step()
    assert torch.equal(p3.data, p4.data)


def test_plateau_and_milestone_schedules():
    opt = PaperSGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    s = PlateauSchedule(opt, patience=1, max_drops=3)
    errs = [0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    drops = [s.step(e, err) for e, err in enumerate(errs)]
    assert sum(drops) == 3 and s.drops == 3  # never more than 3
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert drops[:4] == [False, False, False, True]  # 2 epochs without improvement > patience 1
    s2 = PlateauSchedule(opt)
    s2.load_state_dict(s.state_dict())
    assert s2.drops == 3 and s2.best == 0.8
    m = MilestoneSchedule(opt, [25, 51, 79], base_lr=0.01)
    assert [m.lr_at(e) for e in (0, 24, 25, 51, 79, 89)] == pytest.approx([0.01, 0.01, 1e-3, 1e-4, 1e-5, 1e-5])


# ----------------------------------------------------------------------------------------
# DistributedDataParallel, 2 processes, gloo on CPU
# ----------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir, folder):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    info = Dist.init_distributed("cpu")
    assert info.initialized and info.world_size == world
    torch.manual_seed(0)
    model = StandIn()
    model.net[4].p = 0.0  # no dropout: gradients must be comparable
    ddp = Dist.wrap_ddp(model, info, torch.device("cpu"), False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, CROP, CROP, generator=g) * 50
    y = torch.randint(0, CLASSES, (8,), generator=g)
    half = slice(4 * rank, 4 * rank + 4)
    F.cross_entropy(ddp(x[half]), y[half]).backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters()}, os.path.join(out_dir, "ddp_grads.pt"))
    # and the training loop itself under DDP (sharded sampler, all-reduced eval, stop flag)
    cfg = _cfg(
        folder,
        __import__("pathlib").Path(out_dir) / f"loop{rank}",
        epochs=1,
        batch_size=8,
        stats_file=os.path.join(out_dir, "ddp_stats.pt"),
        output=os.path.join(out_dir, "ddp_run"),
    )
    res = train(cfg, model=_model())
    if rank == 0:
        torch.save(res["history"], os.path.join(out_dir, "ddp_history.pt"))


def test_ddp_two_process_gloo_matches_single_process(folder, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), folder), nprocs=2, join=True)
    torch.manual_seed(0)
    model = StandIn()
    model.net[4].p = 0.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, CROP, CROP, generator=g) * 50
    y = torch.randint(0, CLASSES, (8,), generator=g)
    F.cross_entropy(model(x), y).backward()
    ddp_grads = torch.load(tmp_path / "ddp_grads.pt")
    for k, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[k], p.grad, rtol=1e-5, atol=1e-7)
    hist = torch.load(tmp_path / "ddp_history.pt")
    assert len(hist) == 1 and hist[0]["val_images"] == 9  # every val image counted once over 2 ranks


# ----------------------------------------------------------------------------------------
# fused vs unfused AlexNet
# ----------------------------------------------------------------------------------------
def test_fused_and_unfused_alexnet_losses_match():
    from alexnet_cuda.models import AlexNet

    torch.manual_seed(0)
    fused = AlexNet(num_classes=10, fused=True)
    unfused = AlexNet(num_classes=10, fused=False)
    unfused.load_state_dict(fused.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 227, 227, generator=g) * 50
    y = torch.randint(0, 10, (4,), generator=g)
    losses = {}
    for name, m in (("fused", fused), ("unfused", unfused)):
        opt = PaperSGD(m.parameters(), lr=0.01)
        torch.manual_seed(1)  # same dropout masks
        out = []
        for _ in range(3):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[name] = out
    np.testing.assert_allclose(losses["fused"], losses["unfused"], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# the demo's data
# ----------------------------------------------------------------------------------------
def test_demo_data_and_defaults(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from alexnet_cuda.train.config import config_from_args
    from alexnet_cuda.train.demo import apply_demo

    monkeypatch.setenv("ALEXNET_CUDA_CACHE", str(tmp_path))
    cfg, demo, given = config_from_args(["--demo", "--epochs", "3"])
    cfg = apply_demo(cfg, given)
    assert demo and cfg.epochs == 3 and cfg.arch == "small" and cfg.crop == 24 and not cfg.flip
    classes = Dt.find_classes(os.path.join(cfg.data, "train"))
    assert classes == [str(i) for i in range(10)]
    n_train = len(Dt.make_samples(os.path.join(cfg.data, "train"), classes))
    n_val = len(Dt.make_samples(os.path.join(cfg.data, "val"), classes))
    assert (n_train, n_val) == (1433, 364)
    img = Dt.decode_file(Dt.make_samples(os.path.join(cfg.data, "val"), classes)[0][0], cfg.image_size)
    assert img.shape == (3, 28, 28) and img.dtype == torch.uint8


# ----------------------------------------------------------------------------------------
# synthetic in-memory data, and the NaN/inf guard
# ----------------------------------------------------------------------------------------
def _synthetic_cfg(tmp_path, **kw):
    base = dict(
        synthetic=20,
        synthetic_classes=CLASSES,
        image_size=IMAGE,
        crop=CROP,
        epochs=1,
        batch_size=8,
        workers=0,
        output=str(tmp_path / "run"),
        progress="off",
        tensorboard=False,
        plot=False,
        log_every=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_synthetic_data_trains_a_few_steps(tmp_path):
    ds = Dt.SyntheticImages(5, size=IMAGE, num_classes=CLASSES, seed=1)
    img, label = ds[3]
    assert img.shape == (3, IMAGE, IMAGE) and img.dtype == torch.uint8 and 0 <= label < CLASSES
    assert torch.equal(Dt.SyntheticImages(5, size=IMAGE, num_classes=CLASSES, seed=1).images, ds.images)

    res = train(_synthetic_cfg(tmp_path, max_steps=2, workers=1), model=_model())
    assert len(res["step_losses"]) == 2 and all(math.isfinite(v) for v in res["step_losses"])
    assert res["skipped_train"] == 0 and res["classes"] == [f"synthetic{i}" for i in range(CLASSES)]
    ck = load_checkpoint(res["checkpoint"])
    assert ck["step"] == 2

    # a whole epoch (20 images, batch 8: 3 steps) with no validation set, through the CLI
    from alexnet_cuda.train.cli import main

    rc = main(
        ["--output", str(tmp_path / "cli")]
        + "--synthetic 20 --synthetic-classes 10 --arch small --width 8 --epochs 1 --batch-size 8".split()
        + f"--image-size {IMAGE} --crop {CROP} --workers 0 --progress off --no-tensorboard --no-plot".split()
        + "--input-scale 0.015625".split()
    )  # the demo's scale: raw pixels make this net diverge
    assert rc == 0
    ck = load_checkpoint(str(tmp_path / "cli" / "last.pt"))
    assert ck["step"] == 3 and "val_top1_err" not in ck["history"][0]


class _NaNAt(nn.Module):
    """The stand-in, except that its ``at``-th training forward returns NaN logits."""

    def __init__(self, at):
        super().__init__()
        self.inner = _model()
        self.at, self.calls = at, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint_before_it(tmp_path):
    from alexnet_cuda.train import NonFiniteLossError

    # Losses are read back every 4 steps and before each checkpoint (every 2 steps): the NaN of
    # step 3 is seen before step 4's checkpoint would be written.
    cfg = _synthetic_cfg(tmp_path, synthetic=64, log_every=4, save_every=2, epochs=2)
    last = os.path.join(cfg.output, "last.pt")
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \(training loss nan, not finite\)") as err:
        train(cfg, model=_NaNAt(3))
    assert err.value.step == 3
    assert (
        "(step 2) had its weights checked before it was written: resume from it with a tenth of the lr (or "
        "check the data, the model and the options that set the size of the updates: --lr 0.01, --momentum "
        in str(err.value)
    )
    assert str(err.value).endswith(f"); run the same command followed by: --resume {last} --lr 0.001")
    assert load_checkpoint(last)["step"] == 2

    # Without checkpoints in between it is seen at the next log step (5) and still names step 3.
    cfg = _synthetic_cfg(tmp_path / "b", synthetic=64, log_every=5, epochs=2)
    with pytest.raises(NonFiniteLossError, match="at step 3 .*No checkpoint to resume from.*followed by: --lr 0.001$"):
        train(cfg, model=_NaNAt(3))
    assert not os.path.exists(os.path.join(cfg.output, "last.pt"))
    steps_csv = os.path.join(cfg.output, "steps.csv")  # written at log steps: none before the guard
    assert not os.path.exists(steps_csv) or "nan" not in open(steps_csv).read().lower()


class _BlowsUpAfter(nn.Module):
    """The stand-in, except that from its ``at``-th training step on its weights give a loss far
    above the limit (its logits are scaled by 1e4 outside training mode, i.e. in the check of
    the weights before a checkpoint) while the training losses stay normal."""

    def __init__(self, at):
        super().__init__()
        self.inner = _model()
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += self.training
        out = self.inner(x)
        return out if self.training or self.calls < self.at else out * 1e4


def test_checkpoint_is_not_written_when_its_own_weights_diverged(tmp_path):
    from alexnet_cuda.train import NonFiniteLossError

    # A step's loss is that of the weights before it: the weights after step 4 are checked on
    # step 4's batch before they are saved, so the checkpoint of step 2 stays the newest.
    cfg = _synthetic_cfg(tmp_path, synthetic=64, log_every=1, save_every=2, epochs=2, lr=0.02)
    with pytest.raises(
        NonFiniteLossError,
        match=r"at step 4 \(loss of the weights after it .*above the limit "
        r".*followed by: --resume \S+last.pt --lr 0.002$",
    ) as err:
        train(cfg, model=_BlowsUpAfter(4))
    assert err.value.step == 4
    ck = load_checkpoint(os.path.join(cfg.output, "last.pt"))
    assert ck["step"] == 2 and ck["extra"]["loss_limit"] >= 10 * math.log(CLASSES)  # kept for a resume
