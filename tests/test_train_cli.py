"""The trainer's CLI honours what the user typed, validates every resume and refuses bad
values up front. Each test runs the command the way a user would (``main([...])`` in-process,
on tiny synthetic or generated data) and asserts the exit code and the message.
"""

import csv
import logging
import os
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from _train_folders import folder_args, image_folder, log_messages, synthetic_args  # noqa: E402

from alexnet_cuda.train.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from alexnet_cuda.train.cli import main  # noqa: E402
from alexnet_cuda.train.config import config_from_args  # noqa: E402
from alexnet_cuda.train.demo import apply_demo_defaults  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


# ---------------------------------------------------------------------------------------------
# 1. --resume applies a new --lr / --momentum / --weight-decay
# ---------------------------------------------------------------------------------------------
def test_resume_applies_new_lr_momentum_and_weight_decay(tmp_path, caplog):
    out = tmp_path / "r"
    assert main(synthetic_args(out, "--epochs", "2", "--max-steps", "2", "--lr", "0.02")) == 0
    caplog.set_level(logging.INFO, logger="alexnet_cuda.train")
    rc = main(
        synthetic_args(
            out,
            "--epochs",
            "2",
            "--max-steps",
            "3",
            "--lr",
            "0.001",
            "--momentum",
            "0.5",
            "--weight-decay",
            "0.001",
            "--resume",
            str(out),
        )
    )
    assert rc == 0
    group = load_checkpoint(str(out / "last.pt"))["optimizer"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.001, 0.5, 0.001)
    assert "--lr: 0.02 in the checkpoint, 0.001 now" in log_messages(caplog)


# ---------------------------------------------------------------------------------------------
# 2. resume compares config, classes and world size
# ---------------------------------------------------------------------------------------------
def test_resume_refuses_a_new_batch_size_unless_allowed(tmp_path, caplog):
    out = tmp_path / "bs"
    assert main(synthetic_args(out, "--epochs", "2", "--max-steps", "2")) == 0
    rc = main(synthetic_args(out, "--epochs", "2", "--resume", str(out), "--batch-size", "16"))
    assert rc == 2
    msg = log_messages(caplog)
    assert "--batch-size: 8 in the checkpoint, 16 now" in msg and "--resume-allow-changes" in msg
    caplog.clear()
    caplog.set_level(logging.INFO, logger="alexnet_cuda.train")
    rc = main(
        synthetic_args(
            out,
            "--epochs",
            "2",
            "--resume",
            str(out),
            "--batch-size",
            "16",
            "--resume-allow-changes",
            "--max-steps",
            "3",
        )
    )
    assert rc == 0
    assert "restarts from its beginning" in log_messages(caplog)
    ck = load_checkpoint(str(out / "last.pt"))
    assert (ck["step"], ck["epoch_step"]) == (3, 1)  # epoch 1 restarted at batch 16: one step in


def test_resume_refuses_a_renamed_class_folder(tmp_path, caplog):
    data = image_folder(tmp_path / "data", ["cat", "dog"])
    out = tmp_path / "run"
    assert main(folder_args(data, out, "--max-steps", "1")) == 0
    os.rename(data / "train" / "dog", data / "train" / "bird")
    rc = main(folder_args(data, out, "--resume", str(out)))
    assert rc == 2
    assert "class list" in log_messages(caplog) and "labels would change meaning" in log_messages(caplog)


# ---------------------------------------------------------------------------------------------
# 3. --demo keeps every option the user typed
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "typed, name, value",
    [
        (["--flip"], "flip", True),
        (["--batch-size", "128"], "batch_size", 128),
        (["--workers", "4"], "workers", 4),
        (["--epochs", "90"], "epochs", 90),
        (["--output", "runs/alexnet"], "output", "runs/alexnet"),
    ],
)
def test_demo_keeps_typed_values_equal_to_the_general_defaults(typed, name, value):
    cfg, demo, given = config_from_args(["--demo", *typed])
    cfg = apply_demo_defaults(cfg, given)
    assert demo and getattr(cfg, name) == value
    assert cfg.arch == "small" and cfg.crop == 24  # the demo's settings for what was not typed


# ---------------------------------------------------------------------------------------------
# 4. --crop reaches the model: --crop 224 --arch alexnet trains
# ---------------------------------------------------------------------------------------------
def test_crop_224_alexnet_end_to_end(tmp_path):
    out = tmp_path / "a224"
    rc = main(
        [
            "--synthetic",
            "2",
            "--synthetic-classes",
            "4",
            "--image-size",
            "224",
            "--crop",
            "224",
            "--arch",
            "alexnet",
            "--batch-size",
            "2",
            "--max-steps",
            "1",
            "--workers",
            "0",
            "--output",
            str(out),
            "--progress",
            "off",
            "--no-tensorboard",
            "--no-plot",
        ]
    )
    assert rc == 0
    assert load_checkpoint(str(out / "last.pt"))["config"]["crop"] == 224


# ---------------------------------------------------------------------------------------------
# 5. bad values are refused at parse time, naming the option and the range
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--eval-every", "0"], "--eval-every: 0 is out of range: must be >= 1"),
        (["--log-every", "0"], "--log-every: 0 is out of range: must be >= 1"),
        (["--epochs", "0"], "--epochs: 0 is out of range: must be >= 1"),
        (["--epochs", "-1"], "--epochs: -1 is out of range: must be >= 1"),
        (["--max-steps", "-1"], "--max-steps: -1 is out of range: must be >= 0"),
        (["--batch-size", "0"], "--batch-size: 0 is out of range: must be >= 1"),
        (["--momentum", "1.5"], "--momentum: 1.5 is out of range: must be >= 0 and < 1"),
        (["--crop", "40"], "--crop 40 is larger than the images (--image-size 32)"),
        (["--arch", "alexnet", "--image-size", "256"], "--crop 24: --arch alexnet takes 227"),
    ],
)
def test_bad_values_fail_at_parse_time(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as exc:
        main(synthetic_args(tmp_path / "bad") + args)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing ran


# ---------------------------------------------------------------------------------------------
# 6. checkpoints: clear load errors, a checksum, temp files and steps.csv after a crash
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, expected",
    [
        ("empty", "the file is empty (0 bytes)"),
        ("random", "not a readable PyTorch file"),
        ("foreign", "not a checkpoint of alexnet_cuda.train"),
    ],
)
def test_bad_checkpoint_files_give_one_clear_message(tmp_path, caplog, kind, expected):
    bad = tmp_path / "bad.pt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "random":
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        torch.save(torch.nn.Linear(3, 2).state_dict(), bad)
    rc = main(synthetic_args(tmp_path / "run", "--epochs", "1", "--resume", str(bad)))
    assert rc == 2
    assert f"checkpoint {bad}: {expected}" in log_messages(caplog)


def _flip_a_bit_in_tensor_data(path, name_part):
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if f"/data/{name_part}" in i.filename)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
        pos = info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x10]))


def test_checksum_catches_a_bit_flip_in_tensor_data(tmp_path):
    out = tmp_path / "flip"
    assert main(synthetic_args(out, "--epochs", "1", "--max-steps", "1")) == 0
    path = str(out / "last.pt")
    load_checkpoint(path)  # intact
    with zipfile.ZipFile(path) as z:  # the largest tensor: a weight
        largest = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    _flip_a_bit_in_tensor_data(path, largest.filename.rsplit("/data/", 1)[1])
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def test_crashed_save_temp_files_are_removed_and_steps_csv_has_no_duplicates(tmp_path):
    out = tmp_path / "crash"
    assert main(synthetic_args(out, "--epochs", "2", "--max-steps", "2")) == 0
    # what a run killed (kill -9) after its checkpoint leaves: a temp file of a dead process
    # and steps.csv rows past the checkpoint
    orphan = out / ".last.pt.tmp.999999999"
    orphan.write_bytes(b"partial")
    with open(out / "steps.csv", "a") as f:
        f.write("3,0,9.9,0.01,1.0\n4,0,9.9,0.01,1.0\n")
    assert main(synthetic_args(out, "--epochs", "2", "--max-steps", "5", "--resume", str(out))) == 0
    assert not orphan.exists()
    with open(out / "steps.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# 7. data folders follow torchvision's rules; skip counts are distinct files
# ---------------------------------------------------------------------------------------------
def test_empty_class_folder_is_refused_and_val_only_class_warned(tmp_path, caplog):
    data = image_folder(tmp_path / "data", ["cat", "dog"])
    (data / "train" / "empty").mkdir()
    rc = main(folder_args(data, tmp_path / "run"))
    assert rc == 2 and "class folders without images" in log_messages(caplog) and "empty" in log_messages(caplog)
    (data / "train" / "empty").rmdir()
    (data / "val" / "zebra").mkdir()
    caplog.clear()
    assert main(folder_args(data, tmp_path / "run2", "--max-steps", "1")) == 0
    assert "class folders only in" in log_messages(caplog) and "zebra" in log_messages(caplog)


def test_skip_count_reports_distinct_files(tmp_path, caplog):
    data = image_folder(tmp_path / "data", ["cat", "dog"])
    (data / "train" / "cat" / "bad.png").write_bytes(b"not a png")
    rc = main(folder_args(data, tmp_path / "run", "--epochs", "3"))
    assert rc == 0
    assert "1 unreadable training images were skipped" in log_messages(caplog)


# ---------------------------------------------------------------------------------------------
# 9. biases without weight decay, as the original code (an option)
# ---------------------------------------------------------------------------------------------
def test_no_bias_decay_puts_biases_in_a_group_without_decay():
    from alexnet_cuda.train.config import TrainConfig
    from alexnet_cuda.train.training_run import build_optimisation

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt, _ = build_optimisation(TrainConfig(bias_decay=False, schedule="constant"), model)
    decayed, free = opt.param_groups
    assert [p.dim() for p in free["params"]] == [1, 1] and free["weight_decay"] == 0
    assert decayed["weight_decay"] == 5e-4 and all(p.dim() == 2 for p in decayed["params"])
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only decay moves a parameter
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert moved == [True, False, True, False]  # weights decayed, biases not


# ---------------------------------------------------------------------------------------------
# 4. the divergence message's advice, typed as given, continues the run
# ---------------------------------------------------------------------------------------------
def _demo_cache(request, tmp_path):
    """Where the demo writes its digits and statistics (16 s on 2 busy cores): pytest's cache
    folder, kept between sessions, when the cache plugin is on."""
    cache = getattr(request.config, "cache", None)
    return str(cache.mkdir("alexnet_cuda_demo")) if cache is not None else str(tmp_path / "cache")


def test_demo_divergence_advice_resumes_with_a_lower_lr(tmp_path, caplog, monkeypatch, request):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("ALEXNET_CUDA_CACHE", _demo_cache(request, tmp_path))
    out = tmp_path / "R"
    # lr 0.25 diverges on the demo: losses 3.20, 10.4, 15.8, then 175 at step 4, above the limit
    # (10 x the first loss); the checkpoint of step 2 is the newest, its weights checked. (lr 0.3
    # diverged at step 4 with the libraries of 2026-12-05; with today's it diverges at step 2,
    # before any checkpoint.)
    command = [
        "--demo",
        "--lr",
        "0.25",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--max-steps",
        "6",
        "--output",
        str(out),
        "--workers",
        "0",
        "--progress",
        "off",
        "--no-tensorboard",
        "--no-plot",
    ]
    assert main(command) == 3
    message = log_messages(caplog)
    assert "training diverged at step 4" in message
    advice = message.split("run the same command followed by: ")[1].splitlines()[0]
    assert advice == f"--resume {out / 'last.pt'} --lr 0.025"

    caplog.clear()
    caplog.set_level(logging.INFO, logger="alexnet_cuda.train")
    assert main(command + advice.split()) == 0
    assert "resumed from" in log_messages(caplog) and "diverged" not in log_messages(caplog)
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # steps 3.. again, then on to 6
    assert all(float(r["lr"]) == 0.025 for r in rows[2:])
    assert all(float(r["loss"]) < 5 for r in rows[3:])  # from 15.8 (step 3) back to chance level (2.3)
    assert load_checkpoint(str(out / "last.pt"))["step"] == 6


@pytest.mark.parametrize("schedule", ["plateau", "milestones", "constant"])
def test_resume_rescales_the_velocity_to_the_new_lr_with_every_schedule(schedule):
    from alexnet_cuda.train.config import TrainConfig
    from alexnet_cuda.train.resume import apply_safe_changes
    from alexnet_cuda.train.training_run import build_optimisation

    model = torch.nn.Linear(3, 1, bias=False)
    w = model.weight
    old = TrainConfig(lr=0.2, schedule=schedule, lr_milestones="1")
    optimizer, scheduler = build_optimisation(old, model)
    w.grad = torch.ones_like(w)
    optimizer.step()
    if schedule == "milestones":
        scheduler.start_epoch(1)  # one drop: the current lr is 0.02, the base still 0.2
    velocity = optimizer.state[w]["velocity"].clone()
    new = TrainConfig(lr=0.02, schedule=schedule, lr_milestones="1")
    apply_safe_changes(new, old.to_dict(), optimizer, scheduler)
    # --lr replaces the base of the milestone schedule, otherwise the current lr: a tenth either way.
    torch.testing.assert_close(optimizer.state[w]["velocity"], velocity / 10)
