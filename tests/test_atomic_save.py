"""save_pretrained is atomic as a whole: killed at any step, the folder holds the complete old model or the complete new
one, and no temporary file can be taken for a model or an image. Bad arguments fail before anything is written."""

import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import SMALL_CONFIG, folder_tree
from safetensors.numpy import save_file

import eqx_vae
import eqx_vae.checkpoints._pretrained as pretrained
import eqx_vae.io._atomic as atomic

WEIGHTS = "diffusion_pytorch_model.safetensors"
FP16 = "diffusion_pytorch_model.fp16.safetensors"
MODEL_SUFFIXES = (".safetensors", ".json", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".png", ".jpg", ".npy")


@pytest.fixture(scope="module")
def old_model(small_model):
    return small_model


@pytest.fixture(scope="module")
def new_model(small_model):
    """Other weights under the same config."""
    return jax.tree.map(lambda leaf: leaf + 1.0 if eqx.is_array(leaf) else leaf, small_model)


@pytest.fixture(scope="module")
def other_model():
    """Another config (and weights)."""
    return eqx_vae.AutoencoderKL(SMALL_CONFIG.replace(scaling_factor=0.5, layers_per_block=2), key=jax.random.key(7))


def strays(parent, trees) -> list[str]:
    """Entries under `parent`, outside the folders `trees` (relative paths), that do not look like an eqx_vae temporary
    (hidden, ending in `.eqx-vae-tmp`): anything a later run could take for a model, a latent file or an image."""
    bad = []
    for root, folders, files in os.walk(parent):
        descend = []
        for name in folders + files:
            relative = os.path.relpath(os.path.join(root, name), parent)
            if relative in trees or (name.startswith(".") and name.endswith(atomic.TEMP_SUFFIX)):
                continue
            if name in folders and any(tree.startswith(relative + os.sep) for tree in trees):
                descend.append(name)
                continue
            bad.append(relative)
        folders[:] = descend
    return bad


class Killed(BaseException):
    """The process dies here (a BaseException, so no `except Exception` swallows it)."""


STEPS = [(os, name) for name in ("rename", "replace", "link", "symlink", "mkdir", "remove", "unlink", "rmdir",
                                 "chmod", "fsync")]
STEPS += [(atomic, "exchange_paths"), (pretrained, "write_safetensors"), (pretrained, "_write_text")]


def run_killed_at(n, monkeypatch, save, inspect) -> bool:
    """`save()`, dying right before its n-th file-system step; whether it died. `inspect(step)` runs where it dies."""
    count, inspecting = [0], [False]

    def patched(original, name):
        def step(*args, **kwargs):
            if not inspecting[0]:
                count[0] += 1
                if count[0] == n:
                    inspecting[0] = True
                    try:
                        inspect(f"before {name} (step {n})")
                    finally:
                        inspecting[0] = False
                    raise Killed(name)
            return original(*args, **kwargs)

        return step

    with monkeypatch.context() as patch:
        for owner, name in STEPS:
            patch.setattr(owner, name, patched(getattr(owner, name), name))
        try:
            save()
        except Killed:
            return True
    return False


def kill_points(monkeypatch, save, inspect, reset) -> int:
    """Runs `save()` again and again from the state `reset()` makes, the n-th time dying right before its n-th
    file-system step (every rename, exchange, link, mkdir, write, fsync, chmod, removal), until it completes.
    `inspect(step)` is called where the process dies, with the disk as it would be left, and again after the failed
    save cleaned up. Returns the number of kill points."""
    n = 1
    while True:
        reset()
        if not run_killed_at(n, monkeypatch, save, inspect):
            return n - 1
        inspect(f"after the cleanup of a save that failed at step {n}")
        n += 1


def restorer(target, pristine):
    """A `reset` that puts `pristine` (or nothing, for None) back at `target`."""
    def reset():
        if os.path.lexists(target):
            shutil.rmtree(target)
        if pristine is not None:
            shutil.copytree(pristine, target, symlinks=True)
    return reset


def model_files(snapshot) -> dict[str, str]:
    return {k: v for k, v in snapshot.items() if k in ("config.json", WEIGHTS)}


def test_killed_at_every_step_old_or_new_never_a_mix(monkeypatch, tmp_path, old_model, other_model, capsys):
    """A folder holding the old model and other things (a README, a tool's cache folder, a link) gets a model with
    another config; every kill point leaves the old or the new model, the other things untouched."""
    parent = tmp_path / "models"
    target = parent / "vae"
    eqx_vae.save_pretrained(old_model, target)
    (target / "README.md").write_text("my notes")
    (target / ".cache" / "huggingface").mkdir(parents=True)
    (target / ".cache" / "huggingface" / "x.metadata").write_text("etag")
    os.symlink("README.md", target / "link.md")
    os.chmod(target, 0o750)
    before = folder_tree(target)
    pristine = tmp_path / "pristine"
    shutil.copytree(target, pristine, symlinks=True)
    reference = tmp_path / "reference"
    shutil.copytree(target, reference, symlinks=True)
    eqx_vae.save_pretrained(other_model, reference)
    after = folder_tree(reference)
    assert model_files(after) != model_files(before)
    assert {k: v for k, v in after.items() if k not in model_files(after)} == \
           {k: v for k, v in before.items() if k not in model_files(before)}
    seen = set()

    def inspect(step):
        now = folder_tree(target)
        assert now in (before, after), f"{step}: a mix of old and new: {sorted(now)}"
        seen.add("old" if now == before else "new")
        assert strays(tmp_path, {"models/vae", "pristine", "reference"}) == [], step
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o750

    points = kill_points(monkeypatch, lambda: eqx_vae.save_pretrained(other_model, target), inspect,
                         restorer(target, pristine))
    assert points >= 15 and seen == {"old", "new"}
    assert folder_tree(target) == after and strays(tmp_path, {"models/vae", "pristine", "reference"}) == []
    loaded = eqx_vae.from_pretrained(target)
    assert loaded.config == other_model.config
    with capsys.disabled():
        print(f"\n[atomic save] {points} kill points, each left the old or the new model")


def test_killed_at_every_step_same_config_keeps_other_variants(monkeypatch, tmp_path, old_model, new_model, capsys):
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    eqx_vae.save_pretrained(old_model, target, dtype="float16", variant="fp16")
    before = folder_tree(target)
    pristine = tmp_path / "pristine"
    shutil.copytree(target, pristine)
    reference = tmp_path / "reference"
    shutil.copytree(target, reference)
    eqx_vae.save_pretrained(new_model, reference)
    after = folder_tree(reference)
    assert after[FP16] == before[FP16] and after[WEIGHTS] != before[WEIGHTS]

    def inspect(step):
        assert folder_tree(target) in (before, after), step
        assert strays(tmp_path, {"vae", "reference", "pristine"}) == [], step

    points = kill_points(monkeypatch, lambda: eqx_vae.save_pretrained(new_model, target), inspect,
                         restorer(target, pristine))
    assert folder_tree(target) == after
    with capsys.disabled():
        print(f"\n[atomic save, same config, fp16 variant kept] {points} kill points")
    for loaded, model in ((eqx_vae.from_pretrained(target), new_model),
                          (eqx_vae.from_pretrained(target, variant="fp16"), old_model)):
        np.testing.assert_allclose(np.asarray(eqx_vae.named_parameters(loaded)["decoder.conv_out.bias"]),
                                   np.asarray(eqx_vae.named_parameters(model)["decoder.conv_out.bias"]), atol=1e-3)


def test_killed_at_every_step_into_a_new_folder(monkeypatch, tmp_path, old_model, capsys):
    target = tmp_path / "a" / "vae"
    reference = tmp_path / "reference"
    eqx_vae.save_pretrained(old_model, reference)
    after = folder_tree(reference)

    def inspect(step):
        assert not target.exists() or folder_tree(target) == after, step
        assert strays(tmp_path, {"reference", "a/vae"}) == [], step

    points = kill_points(monkeypatch, lambda: eqx_vae.save_pretrained(old_model, target), inspect,
                         restorer(target, None))
    assert folder_tree(target) == after
    with capsys.disabled():
        print(f"\n[atomic save, new folder] {points} kill points")


def test_without_exchange_the_old_model_is_always_whole_somewhere(monkeypatch, tmp_path, old_model, other_model,
                                                                 capsys):
    """Where renameat2(RENAME_EXCHANGE) is unavailable: two renames. Between them the folder is missing, but the
    complete old model waits beside it in a hidden `.eqx-vae-tmp` folder."""
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    before = folder_tree(target)
    pristine = tmp_path / "pristine"
    shutil.copytree(target, pristine)
    reference = tmp_path / "reference"
    eqx_vae.save_pretrained(other_model, reference)
    after = folder_tree(reference)
    windows = []

    def inspect(step):
        if target.exists():
            assert folder_tree(target) in (before, after), step
        else:
            backups = [p for p in tmp_path.glob(".vae.*" + atomic.TEMP_SUFFIX) if (p / "old").is_dir()]
            assert [folder_tree(p / "old") for p in backups] == [before], step
            windows.append(step)
        assert strays(tmp_path, {"vae", "reference", "pristine"}) == [], step

    points = kill_points(monkeypatch, lambda: eqx_vae.save_pretrained(other_model, target), inspect,
                         restorer(target, pristine))
    assert len(windows) >= 1 and folder_tree(target) == after
    with capsys.disabled():
        print(f"\n[atomic save, no RENAME_EXCHANGE] {points} kill points, {len(windows)} with the old model beside "
              "the folder")


_SAVE_FOREVER = """
import importlib.util, os, shutil, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
target, sources = sys.argv[2], sys.argv[3:]
print("ready", flush=True)
for i in range(10**9):
    with atomic.atomic_folder(target, replace=["diffusion_pytorch_model.safetensors", "config.json"]) as stage:
        for name in ("diffusion_pytorch_model.safetensors", "config.json"):
            shutil.copyfile(os.path.join(sources[i % 2], name), os.path.join(stage, name))
"""


def test_really_killed_processes_leave_a_whole_model(tmp_path, old_model, other_model):
    """A process that saves two models in turn, forever, is SIGKILLed at random moments (no Python cleanup runs);
    each time the folder holds one of them whole, and the next save removes what the dead process left."""
    sources = [tmp_path / "a", tmp_path / "b"]
    eqx_vae.save_pretrained(old_model, sources[0])
    eqx_vae.save_pretrained(other_model, sources[1])
    target = tmp_path / "models" / "vae"
    shutil.copytree(sources[0], target)
    (target / "notes.txt").write_text("keep")
    wholes = []
    for source in sources:
        shutil.copy(target / "notes.txt", source / "notes.txt")
        wholes.append(folder_tree(source))
    rng = random.Random(0)
    for _ in range(12):
        process = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, atomic.__file__, str(target),
                                    *map(str, sources)], stdout=subprocess.PIPE)
        assert process.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.3))
        process.kill()
        process.wait()
        process.stdout.close()
        assert folder_tree(target) in wholes
        assert strays(tmp_path, {"a", "b", "models/vae"}) == []
    eqx_vae.save_pretrained(old_model, target)
    assert folder_tree(target) == wholes[0]
    assert os.listdir(tmp_path / "models") == ["vae"], "the dead processes' temporaries are gone"
    assert eqx_vae.from_pretrained(target).config == old_model.config


def test_in_place_fallback_when_the_folder_cannot_be_swapped(monkeypatch, tmp_path, old_model, other_model):
    """A folder that no sibling can replace (here: hard links refused) is updated file by file, still correctly."""
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    (target / "notes.txt").write_text("keep")

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "hard links not supported (simulated)")

    monkeypatch.setattr(atomic, "_clone_entries", no_links)
    eqx_vae.save_pretrained(other_model, target)
    assert sorted(os.listdir(target)) == ["config.json", WEIGHTS, "notes.txt"]
    assert eqx_vae.from_pretrained(target).config == other_model.config


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, old_model):
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    stale = tmp_path / f".vae.999999999.k3j2{atomic.TEMP_SUFFIX}"
    (stale / "sub").mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    live = tmp_path / f".vae.{os.getpid()}.abcd{atomic.TEMP_SUFFIX}"
    live.mkdir()
    eqx_vae.save_pretrained(old_model, target)
    assert not stale.exists() and live.exists()


def test_saving_through_a_link_keeps_the_link(tmp_path, old_model, other_model):
    real = tmp_path / "real"
    eqx_vae.save_pretrained(old_model, real)
    os.symlink("real", tmp_path / "link")
    eqx_vae.save_pretrained(other_model, tmp_path / "link")
    assert os.path.islink(tmp_path / "link")
    assert eqx_vae.from_pretrained(real).config == other_model.config


def test_stale_shards_of_the_same_variant_are_removed(tmp_path, old_model, other_model):
    target = tmp_path / "vae"
    target.mkdir()
    state = eqx_vae.model_to_state_dict(old_model)
    names = sorted(state)
    shards = [f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    weight_map = {}
    for shard, part in zip(shards, (names[:10], names[10:]), strict=True):
        save_file({n: state[n] for n in part}, str(target / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (target / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (target / "config.json").write_text(old_model.config.to_json_string())
    assert eqx_vae.from_pretrained(target).config == old_model.config
    eqx_vae.save_pretrained(other_model, target)
    assert sorted(os.listdir(target)) == ["config.json", WEIGHTS]


def test_other_variants_of_another_config_are_not_orphaned(tmp_path, old_model, other_model):
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    eqx_vae.save_pretrained(old_model, target, dtype="float16", variant="fp16")
    before = folder_tree(target)
    with pytest.raises(ValueError, match=r"holds other weight files \(diffusion_pytorch_model.fp16.safetensors\) "
                                         r"for a different config.json"):
        eqx_vae.save_pretrained(other_model, target)
    assert folder_tree(target) == before


# Bad arguments and failing disks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int8", "bool", "uint8", "complex64", "nonsense"])
def test_non_floating_dtype_is_refused_before_writing(tmp_path, old_model, dtype):
    with pytest.raises(ValueError, match=f"dtype={dtype}|dtype='{dtype}'"):
        eqx_vae.save_pretrained(old_model, tmp_path / "vae", dtype=dtype)
    assert os.listdir(tmp_path) == []


def test_saving_something_else_than_a_model(tmp_path, old_model):
    # (under the test suite's jaxtyping hook the annotation refuses it first, also with a TypeError naming `model`)
    with pytest.raises(TypeError, match=r"(?s)save_pretrained takes a model \(AutoencoderKL.*\), got dict|"
                                        r"parameter 'model'"):
        eqx_vae.save_pretrained(eqx_vae.named_parameters(old_model), tmp_path / "vae")
    assert os.listdir(tmp_path) == []


def test_path_under_a_regular_file(tmp_path, old_model):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file/sub/vae lies under .*file, which exists and is not a folder"):
        eqx_vae.save_pretrained(old_model, tmp_path / "file" / "sub" / "vae")
    with pytest.raises(NotADirectoryError, match=r"file exists and is not a folder"):
        eqx_vae.save_pretrained(old_model, tmp_path / "file")
    assert os.listdir(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "x"


def test_bad_variant(tmp_path, old_model):
    with pytest.raises(ValueError, match=r"variant='../../x' must be a short name"):
        eqx_vae.save_pretrained(old_model, tmp_path / "vae", variant="../../x")


def test_full_disk_is_an_oserror_naming_the_file(tmp_path, old_model, other_model):
    """A real write failure: the file size limit (as a full disk) makes the weights write fail with EFBIG."""
    target = tmp_path / "vae"
    eqx_vae.save_pretrained(old_model, target)
    before = folder_tree(target)
    limit = os.path.getsize(target / WEIGHTS) // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError, match=rf"vae/{WEIGHTS}: saving failed: .*(File too large|too large)"):
            eqx_vae.save_pretrained(other_model, target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert folder_tree(target) == before and strays(tmp_path, {"vae"}) == []


# Single files -------------------------------------------------------------------------------------------------------


def test_temporary_names_are_hidden_and_end_in_no_image_or_model_suffix(tmp_path):
    for name in ("pic00.png", "z.npy", "weights.safetensors", "x" * 250 + ".png"):
        with atomic.atomic_path(tmp_path / name) as temporary:
            base = os.path.basename(temporary)
            assert base.startswith(".") and base.endswith(atomic.TEMP_SUFFIX)
            assert not base.lower().endswith(MODEL_SUFFIXES)
            with open(temporary, "w") as file:
                file.write("x")
        assert name in os.listdir(tmp_path)
    assert all(not n.endswith(atomic.TEMP_SUFFIX) for n in os.listdir(tmp_path))


def test_atomic_path_failure_leaves_nothing(tmp_path):
    (tmp_path / "out.png").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "out.png") as temporary:
        with open(temporary, "wb") as file:
            file.write(b"new, half")
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == ["out.png"] and (tmp_path / "out.png").read_bytes() == b"old"


def test_atomic_path_keeps_an_existing_files_permissions(tmp_path):
    private = tmp_path / "private.png"
    private.write_bytes(b"old")
    os.chmod(private, 0o600)
    with atomic.atomic_path(private) as temporary, open(temporary, "wb") as file:
        file.write(b"new")
    assert private.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    umask = os.umask(0o027)
    try:
        with atomic.atomic_path(tmp_path / "fresh.png") as temporary, open(temporary, "wb") as file:
            file.write(b"new")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "fresh.png").st_mode) == 0o640  # a new file: 0666 less the umask


def test_atomic_path_writes_through_a_link(tmp_path):
    """As save_pretrained does for a linked folder: the file the link points to is replaced, the link is kept."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "real.png").write_bytes(b"old")
    os.chmod(tmp_path / "data" / "real.png", 0o640)
    os.symlink(os.path.join("data", "real.png"), tmp_path / "link.png")
    with atomic.atomic_path(tmp_path / "link.png") as temporary, open(temporary, "wb") as file:
        file.write(b"new")
    assert os.readlink(tmp_path / "link.png") == os.path.join("data", "real.png")  # still the same link
    assert (tmp_path / "data" / "real.png").read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "real.png").st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["data", "link.png"] and os.listdir(tmp_path / "data") == ["real.png"]


def test_atomic_path_refusals_name_the_destination(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    here = str(tmp_path)
    cases = [
        (tmp_path / "missing" / "out.png", FileNotFoundError,
         f"cannot write {here}/missing/out.png: its folder {here}/missing does not exist"),
        (tmp_path / "file" / "sub" / "out.png", NotADirectoryError,
         f"cannot write {here}/file/sub/out.png: {here}/file exists and is not a folder"),
        (tmp_path / "folder", IsADirectoryError, f"cannot write {here}/folder: it is a folder"),
    ]
    for destination, error, message in cases:
        with pytest.raises(error, match=f"^{re.escape(message)}$"), atomic.atomic_path(destination):
            pytest.fail("the body must not run")
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]
    assert (tmp_path / "file").read_bytes() == b"x" and os.listdir(tmp_path / "folder") == []
