"""Hostile files, folders, caches and option values for alexnet_cuda.train: each ends handled
(exit 0, reported) or refused (exit 2, one message naming the file or option), never in a
traceback, a signal or unbounded resource use. CPU only, fast: tiny images, tiny runs."""

import csv
import io
import json
import logging
import os
import struct
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

from _train_folders import folder_args, image_folder, log_messages, synthetic_args  # noqa: E402

from alexnet_cuda.train import data as Dt  # noqa: E402

# torchvision 0.29 deprecates its codecs (TorchCodec replaces them); the comparisons use them.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


# --------------------------------------------------------------------------------------
# Bad image files, generated here
# --------------------------------------------------------------------------------------
def _png_bytes(rng, h=16, w=16):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return bytearray(buf.getvalue())


def damaged_png(path, rng):
    """A valid PNG with bytes 60-79 (inside its compressed data block) zeroed: libpng, as
    torchvision.io.decode_image calls it, dies with SIGSEGV on such files."""
    data = _png_bytes(rng)
    data[60:80] = bytes(20)
    with open(path, "wb") as f:
        f.write(data)


def grey16_png(path, rng, h=20, w=30):
    """A valid 16-bit greyscale PNG; returns its values."""
    values = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    Image.fromarray(values).save(path)
    return values


def rgb16_png(path, rng, h=5, w=7):
    """A valid 16-bit RGB PNG, written chunk by chunk (Pillow does not write 16-bit RGB)."""
    values = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        )
    return values


# --------------------------------------------------------------------------------------
# The one decoding rule
# --------------------------------------------------------------------------------------
def test_damaged_png_raises_unreadable_image(tmp_path):
    path = str(tmp_path / "damaged.png")
    damaged_png(path, np.random.default_rng())
    with pytest.raises(Dt.UnreadableImage, match="damaged.png"):
        Dt.decode_file(path, 32)
    with open(path, "rb") as f:
        with pytest.raises(Dt.UnreadableImage):
            Dt.decode_bytes(f.read(), path)


def test_sixteen_bit_images_become_8_bit_rgb_keeping_the_high_byte(tmp_path):
    rng = np.random.default_rng()
    grey = grey16_png(str(tmp_path / "g.png"), rng)
    img = Dt.read_rgb(str(tmp_path / "g.png"))
    assert img.dtype == torch.uint8 and img.shape == (3,) + grey.shape
    expected = torch.from_numpy((grey >> 8).astype(np.uint8))
    for c in range(3):
        assert torch.equal(img[c], expected)
    rgb = rgb16_png(str(tmp_path / "c.png"), rng)
    img = Dt.read_rgb(str(tmp_path / "c.png"))
    assert torch.equal(img, torch.from_numpy((rgb >> 8).astype(np.uint8)).permute(2, 0, 1))
    assert Dt.decode_file(str(tmp_path / "c.png"), 32).dtype == torch.uint8


@pytest.mark.parametrize("mode", ["P", "L", "LA", "1", "RGBA", "CMYK"])
def test_every_mode_becomes_8_bit_rgb(tmp_path, mode):
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    im = im.convert(mode)
    path = str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    im.save(path, **({"transparency": 0} if mode == "P" else {}))
    img = Dt.read_rgb(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 12, 18)
    if mode == "RGBA":  # alpha dropped, colours kept
        assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1))
    if mode in ("L", "LA"):
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_jpeg_pixels_equal_torchvision(tmp_path):
    import torchvision.io as tvio

    path = str(tmp_path / "x.jpg")
    Image.fromarray(np.random.default_rng().integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path, quality=90)
    assert torch.equal(Dt.read_rgb(path), tvio.decode_image(path, mode=tvio.ImageReadMode.RGB))


def test_file_name_that_is_not_utf8_is_read(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/bad\xff.png"
    with open(raw, "wb") as f:
        f.write(_png_bytes(np.random.default_rng()))
    (name,) = os.listdir(str(tmp_path))  # as os.walk gives it: a str with a surrogate escape
    assert Dt.decode_file(os.path.join(str(tmp_path), name), 32).shape == (3, 32, 32)
    assert Dt.read_rgb(raw).shape == (3, 16, 16)
    assert Dt.display_path(name) == "bad\\xff.png"


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n"])
def test_garbage_and_missing_files_raise_unreadable_image(tmp_path, content):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(Dt.UnreadableImage):
        Dt.decode_file(str(path))
    with pytest.raises(Dt.UnreadableImage, match="nope.png"):
        Dt.decode_file(str(tmp_path / "nope.png"))
    with pytest.raises(Dt.UnreadableImage):
        Dt.decode_file(str(tmp_path))  # a folder


def test_extreme_aspect_ratio_is_refused_before_the_resize(tmp_path):
    path = str(tmp_path / "strip.png")
    Image.fromarray(np.zeros((2, 2 * Dt.MAX_ASPECT + 2, 3), dtype=np.uint8) + 7).save(path)
    with pytest.raises(Dt.UnreadableImage, match="longer side"):
        Dt.decode_file(path)


def test_dataset_items_for_bad_files_are_unreadable(tmp_path):
    rng = np.random.default_rng()
    damaged_png(str(tmp_path / "d.png"), rng)
    grey16_png(str(tmp_path / "g.png"), rng)
    ds = Dt.ImageFolderUint8([(str(tmp_path / "d.png"), 0), (str(tmp_path / "g.png"), 1)], size=32)
    assert isinstance(ds[0], Dt.Unreadable)
    img, label = ds[1]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and label == 1
    batch = Dt.collate_uint8([ds[0], ds[1]])
    assert batch.images.shape == (1, 3, 32, 32) and batch.skipped == 1
    # the GPU-decoding path (bytes in workers, decode_batch) on the CPU: the same rules
    raw = Dt.ImageFolderBytes(ds.samples)
    out = Dt.decode_batch(Dt.collate_bytes([raw[0], raw[1]]), torch.device("cpu"), 32)
    assert out.images.shape == (1, 3, 32, 32) and out.skipped == 1
    assert torch.equal(out.images[0], img)


# --------------------------------------------------------------------------------------
# The trainer on hostile data folders (main() in-process, tiny images, one short epoch)
# --------------------------------------------------------------------------------------
def _run(caplog, *argv):
    from alexnet_cuda.train.cli import main

    caplog.clear()
    caplog.set_level(logging.INFO, logger="alexnet_cuda.train")
    return main(list(argv))


def test_row1_damaged_png_is_skipped_and_reported_once(tmp_path, caplog):
    """Rows 1 and 16: training goes on past a PNG that crashes libpng; its warning comes once
    (statistics pass and two epochs all read it in this process with --workers 0)."""
    data = image_folder(tmp_path / "d")
    damaged_png(str(data / "train" / "a" / "damaged.png"), np.random.default_rng())
    assert _run(caplog, *folder_args(data, tmp_path / "r", "--epochs", "2")) == 0
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(warnings) == 1 and "damaged.png" in warnings[0]
    assert "1 unreadable training images were skipped" in log_messages(caplog)


def test_row2_sixteen_bit_png_trains(tmp_path, caplog):
    data = image_folder(tmp_path / "d")
    grey16_png(str(data / "train" / "a" / "deep.png"), np.random.default_rng())
    assert _run(caplog, *folder_args(data, tmp_path / "r")) == 0
    assert "unreadable" not in log_messages(caplog)
    assert "7 training images" in log_messages(caplog)


def test_row3_symlink_cycles_are_walked_once(tmp_path, caplog):
    data = image_folder(tmp_path / "d", classes=("a", "b", "c"))
    os.symlink("..", data / "train" / "a" / "loop")
    os.symlink(".", data / "train" / "b" / "self")
    os.symlink("../c/0.png", data / "train" / "b" / "twice.png")  # one file, two names
    caplog.set_level(logging.WARNING, logger="alexnet_cuda.train")
    samples = Dt.make_samples(str(data / "train"), ["a", "b", "c"])
    # every file once (the first name reached, in class order, keeps it), no class walked twice
    assert len(samples) == 9 and len({os.path.realpath(p) for p, _ in samples}) == 9
    assert [label for _, label in samples] == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    text = log_messages(caplog)
    assert "2 linked folder(s)" in text and "loop" in text and "self" in text
    assert "1 image(s) reached a second time" in text and os.path.join("c", "0.png") in text
    assert _run(caplog, *folder_args(data, tmp_path / "r")) == 0
    assert "3 classes, 9 training images" in log_messages(caplog)


def test_row4_no_readable_val_image_means_no_val_metrics(tmp_path, caplog):
    data = image_folder(tmp_path / "d")
    for f in (data / "val").rglob("*.png"):
        f.write_bytes(b"broken")
    assert _run(caplog, *folder_args(data, tmp_path / "r", "--epochs", "2", "--lr-patience", "0")) == 0
    assert "validation skipped" in log_messages(caplog)
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(not r.get("val_top1_err") for r in rows)
    assert float(rows[1]["lr"]) == float(rows[0]["lr"])  # the plateau schedule saw no error


def test_evaluation_that_reads_nothing_reports_no_metrics():
    from alexnet_cuda.train.evaluate import EvalResult

    assert EvalResult(skipped=5).metrics() == {"val_skipped": 5}
    assert EvalResult().metrics() == {}


@pytest.mark.parametrize("row, broken", [(6, ["a"]), (8, ["a", "b"])])
def test_rows6_8_a_class_without_a_readable_image_is_refused(tmp_path, caplog, row, broken):
    data = image_folder(tmp_path / "d")
    for c in broken:
        for f in (data / "train" / c).glob("*.png"):
            f.write_bytes(b"broken")
    assert _run(caplog, *folder_args(data, tmp_path / "r")) == 2
    text = log_messages(caplog)
    assert "class folders whose images are all unreadable" in text and ", ".join(broken) in text
    assert not (tmp_path / "r" / "last.pt").exists()


def test_row15_file_name_that_is_not_utf8_trains(tmp_path, caplog):
    data = image_folder(tmp_path / "d")
    with open(os.fsencode(str(data / "train" / "a")) + b"/bad\xff.png", "wb") as f:
        f.write(_png_bytes(np.random.default_rng(), 30, 30))
    assert _run(caplog, *folder_args(data, tmp_path / "r")) == 0
    assert "7 training images" in log_messages(caplog) and "unreadable" not in log_messages(caplog)


# --------------------------------------------------------------------------------------
# Caches: content that is not what the code wrote is a miss, with one warning naming the file
# --------------------------------------------------------------------------------------
def _choice_entry(key, value):
    """An entry as conv2d_relu's choice cache writes it: {"choice": name, "times": {name: ms}}."""
    return (
        isinstance(key, str)
        and isinstance(value, dict)
        and isinstance(value.get("choice"), str)
        and isinstance(value.get("times", {}), dict)
    )


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        '{"t|dgrad|k": {}}',
        '{"t|dgrad|k": {"choice": ["triton"]}}',
        '{"t|dgrad|k": {"choice": "triton", "times": 3}}',
        "[" * 100_000,
        "{\"a\": 1",
        "\udcff",
    ],
    ids=["list", "null", "no_choice", "list_choice", "bad_times", "deep", "truncated", "binary"],
)
def test_row5_json_cache_of_any_shape_is_a_miss_with_one_warning(tmp_path, caplog, content):
    """The helpers conv2d_relu's choice cache (conv_select.json) is to read and write with."""
    from alexnet_cuda import _cache

    path = str(tmp_path / "conv_select.json")
    with open(path, "wb") as f:
        f.write(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda"):
        assert _cache.read_json_cache(path, _choice_entry) == {}
        assert _cache.read_json_cache(path, _choice_entry) == {}
    assert len([r for r in caplog.records if path in r.getMessage()]) == 1
    entry = {"choice": "triton", "times": {"triton": 1.0, "cudnn": 2.0}}
    assert _cache.merge_json_cache(path, {"t|dgrad|k2": entry}, _choice_entry) == {"t|dgrad|k2": entry}
    with open(path) as f:
        assert json.load(f) == {"t|dgrad|k2": entry}


def _merge_keys(path, start, n):
    from alexnet_cuda import _cache

    for i in range(start, start + n):
        _cache.merge_json_cache(path, {f"t|dgrad|k{i}": {"choice": "cudnn", "times": {"cudnn": 1.0}}}, _choice_entry)


def test_row17_concurrent_writers_keep_every_entry(tmp_path):
    import multiprocessing

    path = str(tmp_path / "conv_select.json")
    ctx = multiprocessing.get_context("fork")  # the children only read and write files: no re-import
    procs = [ctx.Process(target=_merge_keys, args=(path, i * 100, 100)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open(path) as f:
        assert len(json.load(f)) == 200


def _stats_loader(images):
    return lambda: [Dt.Batch(images, torch.zeros(len(images), dtype=torch.long))]


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "folder", "foreign", "other_size", "nan"])
def test_row7_bad_stats_cache_is_recomputed_with_one_warning(tmp_path, caplog, kind):
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    path = tmp_path / "stats.pt"
    good = Dt.compute_stats(_stats_loader(images)())
    if kind == "truncated":
        Dt.atomic_torch_save(good.state_dict(), str(path))
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng().integers(0, 256, 999, dtype=np.uint8).tobytes())
    elif kind == "folder":
        path.mkdir()
    elif kind == "foreign":
        torch.save({"weights": torch.ones(3)}, str(path))
    elif kind == "other_size":
        torch.save(Dt.compute_stats(_stats_loader(torch.zeros(2, 3, 4, 4, dtype=torch.uint8) + 9)()).state_dict(), path)
    else:
        bad = good.state_dict()
        bad["eigvals"] = torch.full((3,), float("nan"))
        torch.save(bad, str(path))
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda.train"):
        stats = Dt.load_or_compute_stats(str(path), _stats_loader(images), size=8)
    assert torch.equal(stats.mean_image, good.mean_image)
    named = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(named) == (2 if kind == "folder" else 1)  # a folder also cannot be written
    if kind != "folder":  # replaced by a good file: no warning next time
        caplog.clear()
        Dt.load_or_compute_stats(str(path), lambda: pytest.fail("recomputed"), size=8)
        assert not caplog.records


def test_row7_cache_variable_naming_a_file_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    from alexnet_cuda import _cache

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("ALEXNET_CUDA_CACHE", str(not_a_folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda"):
        assert _cache.cache_dir() == str(tmp_path / "home" / ".cache" / "alexnet_cuda")
        assert _cache.cache_dir() == _cache.default_cache_dir()
    assert len([r for r in caplog.records if str(not_a_folder) in r.getMessage()]) == 1


# --------------------------------------------------------------------------------------
# Options: checked before any work, exit 2 and one message naming the option
# --------------------------------------------------------------------------------------
def _synthetic(out, *extra):
    return synthetic_args(out, "--epochs", "1", *extra)


def _refused(capsys, argv, expected):
    from alexnet_cuda.train.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert expected in err, err
    assert "Traceback" not in err


BIG = "99999999999999999999"


@pytest.mark.parametrize(
    "args, expected",
    [
        # row 9
        (["--seed", "18446744073709551616"], "--seed: 18446744073709551616 is out of range"),
        (["--batch-size", BIG], f"--batch-size: {BIG} is out of range"),
        (["--image-size", BIG], f"--image-size: {BIG} is out of range"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (["--device", ""], "--device '': expected"),
        (["--device", "meta"], "--device 'meta': expected"),
        (["--device", "cuda:-1"], "--device 'cuda:-1': expected"),
        (["--device", "cuda:"], "--device 'cuda:': expected"),
        (["--device", "cuda:99"], "--device cuda:99: "),
        (["--model-parallel", "--device", "cpu"], "--model-parallel puts AlexNet's two towers on two GPUs"),
        (["--stats-file", "{tmp}"], "--stats-file {tmp}: is a folder"),
        (["--output", "{tmp}/file"], "--output {tmp}/file: exists and is not a folder"),
        (["--output", "{tmp}/file/run"], "--output {tmp}/file/run: {tmp}/file is not a folder"),
        # row 10
        (["--workers", BIG], f"--workers: {BIG} is out of range"),
        (["--workers", str(4 * (os.cpu_count() or 1) + 1)], "on this machine (4 per CPU core"),
        (["--image-size", "100000"], "--image-size: 100000 is out of range: must be >= 1 and <= 1024"),
        (["--width", "4096"], "--width: 4096 is out of range: must be >= 2 and <= 512"),
        (["--synthetic", str(2**40)], f"--synthetic {2**40}: "),
        # row 11
        (["--lr", "inf"], "--lr: inf is not a finite number"),
        (["--weight-decay", "inf"], "--weight-decay: inf is not a finite number"),
        (["--pca-std", "inf"], "--pca-std: inf is not a finite number"),
        (["--input-scale", "inf"], "--input-scale: inf is not a finite number"),
        (["--lr-threshold", "inf"], "--lr-threshold: inf is not a finite number"),
        (["--lr", "nan"], "--lr: nan is not a finite number"),
        # rows 13 and 18
        (["--output="], "--output '': give a folder"),
        (["--resume="], "--resume '': give a checkpoint file or a run folder"),
        (["--resume", "{tmp}/nope.pt"], "--resume {tmp}/nope.pt: no such file or folder"),
        (["--resume", "{tmp}"], "a folder without last.pt"),
        (["--stats-file="], "--stats-file '': give a file name"),
        (["--data", "{tmp}/nodata"], "--data {tmp}/nodata: no folder"),
    ],
)
def test_rows9_10_11_13_18_bad_options_exit_2_before_any_work(tmp_path, capsys, args, expected):
    if "cuda" in " ".join(args) and torch.cuda.is_available() and "99" not in " ".join(args):
        pytest.skip("checks the message for a machine without that GPU")
    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = _synthetic(tmp_path / "run", *args)
    if args[0].startswith("--data"):
        argv = argv[2:]  # no --synthetic 32
    _refused(capsys, argv, expected.replace("{tmp}", str(tmp_path)))
    assert not (tmp_path / "run").exists()


def test_row13_stats_file_in_an_unwritable_place_is_refused_at_parse_time(tmp_path, capsys):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    _refused(
        capsys,
        _synthetic(tmp_path / "run", "--stats-file", "/proc/nope.pt"),
        "--stats-file /proc/nope.pt: cannot write in /proc",
    )


def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _refused(capsys, _synthetic(tmp_path / "run", "--device", "cuda"), "--device cuda: no CUDA GPU")


def test_row11_divergence_advice_names_the_options_that_size_the_update(tmp_path, caplog):
    from alexnet_cuda.train.monitor import resume_advice

    text = resume_advice(
        ("r/last.pt", 4), 0.001, "the options that set the size of the updates: --lr 0.01, --weight-decay 0.5"
    )
    assert "--weight-decay 0.5" in text and text.endswith("followed by: --resume r/last.pt --lr 0.001")
    # a real divergence: --weight-decay 400 is what blows up, and the message names it
    rc = _run(caplog, *_synthetic(tmp_path / "r", "--weight-decay", "400", "--max-steps", "6"))
    assert rc == 3
    text = log_messages(caplog)
    assert "training diverged" in text and "--weight-decay 400" in text and "--momentum 0.9" in text


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from alexnet_cuda.train.cli import main

    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(_synthetic(out, "--max-steps", "2", "--epochs", "1")) == 0
    return out / "last.pt"


def _edited(checkpoint, tmp_path, edit, rechecksum=False):
    from alexnet_cuda.train.checkpoint import tensor_checksum

    ckpt = torch.load(str(checkpoint), weights_only=False)
    edit(ckpt)
    if rechecksum:
        ckpt.pop("checksum")
        ckpt["checksum"] = tensor_checksum(ckpt, whole=True)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, str(path))
    return path


@pytest.mark.parametrize("what", ["loss_limit", "python_rng", "numpy_rng", "history", "config"])
def test_row12_checksum_covers_the_whole_payload(checkpoint, tmp_path, what):
    from alexnet_cuda.train.checkpoint import CheckpointError, load_checkpoint

    def edit(ckpt):
        if what == "loss_limit":
            ckpt["extra"]["loss_limit"] *= 1000
        elif what == "python_rng":
            version, state, gauss = ckpt["rng"]["python"]
            ckpt["rng"]["python"] = (version, (state[0] ^ 1,) + state[1:], gauss)
        elif what == "numpy_rng":
            ckpt["rng"]["numpy"] = ckpt["rng"]["numpy"][:2] + (ckpt["rng"]["numpy"][2] + 1,) + ckpt["rng"]["numpy"][3:]
        elif what == "history":
            ckpt["extra"]["train_size"] += 1
        else:
            ckpt["config"]["seed"] += 1

    load_checkpoint(str(checkpoint))  # the original loads
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(str(_edited(checkpoint, tmp_path, edit)))


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["extra"].update(loss_limit=float("inf")), "loss limit inf"),
        (lambda c: c["extra"].update(loss_limit=-1.0), "loss limit -1.0"),
        (lambda c: c["optimizer"]["param_groups"][0].update(lr=float("nan")), "not all finite"),
        (lambda c: c["optimizer"]["param_groups"][0].update(lr=1.0), "above the run's --lr"),
        (lambda c: c["optimizer"]["param_groups"][0].update(momentum=1.5), "out of range"),
        (lambda c: c.update(step=-3), "step -3 is not a count"),
    ],
)
def test_row12_values_that_matter_are_validated_on_load(checkpoint, tmp_path, edit, expected):
    from alexnet_cuda.train.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(str(_edited(checkpoint, tmp_path, edit, rechecksum=True)))


def test_row14_shape_change_names_tensors_shapes_and_option(tmp_path, caplog):
    out = tmp_path / "r"
    assert _run(caplog, *_synthetic(out, "--max-steps", "1", "--epochs", "1")) == 0
    rc = _run(
        caplog, *_synthetic(out, "--epochs", "2", "--resume", str(out), "--resume-allow-changes", "--width", "16")
    )
    assert rc == 2
    text = log_messages(caplog)
    assert "weights do not fit this model" in text
    assert "(8, 3, " in text and "(16, 3, " in text  # the first conv's weight, both shapes
    assert "--width: 8 in the checkpoint, 16 now" in text.split("weights do not fit")[1]
