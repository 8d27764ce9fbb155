"""Raw sources on tiny files made here, the download path (file:// URLs, md5), the cache, and the real data."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import DataConfig, NoiseConfig, SpecError
from bench.data import DATASETS, load_raw, load_splits
from bench.data import cache as data_cache
from bench.data.download import DownloadError, download_url
from bench.data.sources import CIFAR10_CLASSES, Cifar10, Cifar100, TinyImageNet, read_idx, tar_index


# ------------------------------------------------------------------------------------------ fixtures
def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar_gz(src_dir: Path, out: Path, arcname: str | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src_dir, arcname=arcname if arcname is not None else src_dir.name)
    return out


def _zip(src_dir: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(src_dir.rglob("*")):
            zf.write(p, p.relative_to(src_dir.parent).as_posix())
    return out


def make_cifar10(root: Path, per_batch: int = 3) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-batches-py with 5 train batches + test batch; images encode (batch, index) in their pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for b in range(1, 7):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        name = f"data_batch_{b}" if b <= 5 else "test_batch"
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        xs.append(data)
        ys.append(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}, f)
    return folder, np.concatenate(xs), np.concatenate(ys)


def make_cifar100(root: Path, n: int = 12) -> tuple[Path, list[int]]:
    """cifar-100-python with 6 fine classes in 2 superclasses: fine->coarse = [0, 1, 0, 1, 0, 1]."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    f2c = [0, 1, 0, 1, 0, 1]
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        fine = [i % 6 for i in range(n)]
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine,
                         b"coarse_labels": [f2c[c] for c in fine]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(6)],
                     b"coarse_label_names": [b"c0", b"c1"]}, f)
    return folder, f2c


def _img(value: int, size: int = 4, mode: str = "RGB") -> Image.Image:
    arr = np.full((size, size, 3), value, dtype=np.uint8)
    arr[0, 0] = (value, 255 - value, 7)
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def make_imagefolder(root: Path, classes=("cat", "ant", "bee"), n_train: int = 3, n_test: int = 2) -> Path:
    """train/<class>/*.png and test/<class>/*.png; pixel value encodes (split, class, index)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                value = 100 * (split == "test") + 10 * ci + i
                _img(value).save(root / split / c / f"{i:03d}.png")
    (root / "train" / classes[0] / ".DS_Store").write_bytes(b"junk")  # ignored
    return root


def make_tinyimagenet(root: Path, wnids=("n02", "n01"), n_train: int = 2) -> Path:
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(n_train):
            _img(60 * (w == "n02") + 20 * i, size=8).save(base / "train" / w / "images" / f"{w}_{i}.JPEG",
                                                         format="JPEG", quality=100)
    lines = []
    for i, w in enumerate(["n01", "n02", "n02"]):
        _img(200, size=8, mode="L").save(base / "val" / "images" / f"val_{i}.JPEG", format="JPEG", quality=100)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t8\t8")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images").mkdir(parents=True)
    _img(5, size=8).save(base / "test" / "images" / "test_0.JPEG", format="JPEG")  # unlabelled: ignored
    return base


def write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_mnist(root: Path, splits=("t10k",), n: int = 50, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    ext = ".gz" if gz else ""
    for split in splits:
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10, 2049)
    return root


# --------------------------------------------------------------------------------------------- cifar
def test_cifar10_pickle_folder_decodes_pixels_labels_and_class_names(tmp_path, cache_dir):
    folder, xs, ys = make_cifar10(tmp_path)
    raw, fp, _ = load_raw(DataConfig(name="cifar10", root=str(tmp_path)), cache_dir)
    assert raw.x_train.shape == (15, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    assert torch.equal(raw.x_train.reshape(15, -1), torch.from_numpy(xs[:15]))
    assert torch.equal(raw.y_test, torch.as_tensor(ys[15:], dtype=torch.int64))
    assert raw.classes == CIFAR10_CLASSES and len(fp) == 64
    # root may also be the batches folder itself, or the .tar.gz (read in place): same tensors
    raw2, _, _ = load_raw(DataConfig(name="cifar10", root=str(folder)), cache_dir)
    arch = _tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    raw3, fp3, _ = load_raw(DataConfig(name="cifar10", root=str(arch)), cache_dir)
    assert torch.equal(raw2.x_train, raw.x_train) and torch.equal(raw3.x_test, raw.x_test) and fp3 != fp


def test_cifar100_reads_fine_labels_and_superclass_map(tmp_path, cache_dir):
    _, f2c = make_cifar100(tmp_path)
    raw, _, _ = load_raw(DataConfig(name="cifar100", root=str(tmp_path)), cache_dir)
    assert raw.fine_to_coarse == f2c and raw.coarse_classes == ["c0", "c1"]
    assert raw.classes == [f"f{i}" for i in range(6)] and raw.y_train.tolist() == [i % 6 for i in range(12)]
    s = load_splits(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.0,
                               noise=NoiseConfig("asymmetric", 0.5)), cache_dir=cache_dir)
    flipped = s.noise_mask
    nxt = {0: 2, 2: 4, 4: 0, 1: 3, 3: 5, 5: 1}
    assert flipped.sum() == 6  # round(0.5 * 2) per class, 6 classes
    for c, n in zip(s.clean_train_y[flipped].tolist(), s.train.y[flipped].tolist()):
        assert nxt[c] == n
    assert s.meta["note"] == "CIFAR-100" and s.train.mean == (0.5071, 0.4865, 0.4409)


def test_missing_cifar_without_download_names_path_and_flag(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError) as e:
        load_raw(DataConfig(name="cifar10", root=str(tmp_path / "nowhere")), cache_dir)
    assert "set dataset.download: true" in str(e.value) and str(tmp_path / "nowhere") in str(e.value)


# ------------------------------------------------------------------------------------------ download
def test_download_runs_real_code_with_md5_from_file_url(tmp_path, cache_dir, monkeypatch):
    src, _, _ = make_cifar10(tmp_path / "src")
    arch = _tar_gz(src, tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setattr(Cifar10, "URL", arch.as_uri())
    monkeypatch.setattr(Cifar10, "MD5", _md5(arch))
    dest = tmp_path / "dl"
    raw, _, _ = load_raw(DataConfig(name="cifar10", root=str(dest), download=True), cache_dir)
    assert (dest / "cifar-10-batches-py" / "data_batch_5").is_file() and (dest / "cifar-10-python.tar.gz").is_file()
    assert raw.x_train.shape[0] == 15 and not list(dest.glob("*.part")) and not list(dest.glob(".extract-*"))


def test_download_with_wrong_md5_raises_and_leaves_no_file(tmp_path):
    payload = tmp_path / "blob.bin"
    payload.write_bytes(b"hello" * 100)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_url(payload.as_uri(), tmp_path / "out" / "blob.bin", md5="0" * 32)
    assert not (tmp_path / "out" / "blob.bin").exists() and not (tmp_path / "out" / "blob.bin.part").exists()
    got = download_url(payload.as_uri(), tmp_path / "out" / "blob.bin", md5=_md5(payload))
    assert got.read_bytes() == payload.read_bytes()


def test_dataset_download_with_wrong_md5_fails(tmp_path, cache_dir, monkeypatch):
    make_cifar100(tmp_path / "src")
    arch = _tar_gz(tmp_path / "src" / "cifar-100-python", tmp_path / "c100.tar.gz")
    monkeypatch.setattr(Cifar100, "URL", arch.as_uri())
    monkeypatch.setattr(Cifar100, "MD5", "f" * 32)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        load_raw(DataConfig(name="cifar100", root=str(tmp_path / "dl"), download=True), cache_dir)
    assert not (tmp_path / "dl" / "cifar-100-python").exists()


def test_tinyimagenet_download_of_zip(tmp_path, cache_dir, monkeypatch):
    base = make_tinyimagenet(tmp_path / "src")
    arch = _zip(base, tmp_path / "tiny-imagenet-200.zip")
    monkeypatch.setattr(TinyImageNet, "URL", arch.as_uri())
    monkeypatch.setattr(TinyImageNet, "MD5", _md5(arch))
    raw, _, _ = load_raw(DataConfig(name="tinyimagenet", root=str(tmp_path / "dl"), download=True), cache_dir)
    assert (tmp_path / "dl" / "tiny-imagenet-200" / "wnids.txt").is_file() and raw.x_train.shape[0] == 4


# --------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_folder_and_targz_give_identical_exact_pixels(tmp_path, cache_dir):
    root = make_imagefolder(tmp_path / "tree")
    raw, _, _ = load_raw(DataConfig(name="imagefolder", root=str(root)), cache_dir)
    assert raw.classes == ["ant", "bee", "cat"]  # sorted folder names
    assert raw.x_train.shape == (9, 3, 4, 4) and raw.x_test.shape == (6, 3, 4, 4)
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # "bee" was written as class index 2 -> value 10*2 + i; first pixel (v, 255-v, 7)
    assert raw.x_train[3, :, 1, 1].tolist() == [20, 20, 20] and raw.x_train[3, :, 0, 0].tolist() == [20, 235, 7]
    assert raw.x_test[0, 0, 1, 1] == 110
    arch = _tar_gz(root, tmp_path / "tree.tar.gz", arcname="wrapped")  # a top folder inside the archive
    raw2, _, _ = load_raw(DataConfig(name="imagefolder", root=str(arch)), cache_dir)
    assert torch.equal(raw2.x_train, raw.x_train) and torch.equal(raw2.y_test, raw.y_test)
    assert raw2.classes == raw.classes


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_fast_tar_index_matches_tarfile_incl_long_names(tmp_path, fmt):
    long_dir = "d" * 60 + "/" + "e" * 60  # > 100 chars with the file name: prefix / long-name records
    names = ["a.txt", f"{long_dir}/f.txt", "sub/x" * 30 + ".bin", "\u00e9t\u00e9/\u00fc.png"]
    if fmt == tarfile.USTAR_FORMAT:
        names = names[:2]  # ustar cannot hold the others
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, n in enumerate(names):
            info = tarfile.TarInfo(n)
            info.size = 700 * i + 3
            tf.addfile(info, io.BytesIO(bytes([i]) * info.size))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        expected = [(m.name, m.offset_data, m.size) for m in tf if m.isfile()]
    assert tar_index(raw) == expected and len(expected) == len(names)
    assert tar_index(raw[:10] + b"x" + raw[11:]) is None  # corrupt checksum -> caller falls back to tarfile


def test_imagefolder_jpeg_and_grey_images_become_rgb(tmp_path, cache_dir):
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        _img(128, mode="L").save(tmp_path / split / "a" / "x.jpg", quality=95)
    raw, _, _ = load_raw(DataConfig(name="imagefolder", root=str(tmp_path)), cache_dir)
    assert raw.x_train.shape == (1, 3, 4, 4) and abs(int(raw.x_train[0, 0, 2, 2]) - 128) <= 3


def test_imagefolder_without_root_is_spec_error_naming_root():
    with pytest.raises(SpecError) as e:
        load_splits(DataConfig(name="imagefolder"))
    assert e.value.path == "dataset.root" and "dataset.root" in str(e.value)


def test_imagefolder_mixed_sizes_error_names_file(tmp_path, cache_dir):
    make_imagefolder(tmp_path, classes=("a",))
    _img(1, size=5).save(tmp_path / "train" / "a" / "999.png")
    with pytest.raises(ValueError, match="999.png"):
        load_raw(DataConfig(name="imagefolder", root=str(tmp_path)), cache_dir)


def test_cifar10_jpg_alias_uses_cifar10_names_and_stats(tmp_path, cache_dir):
    root = make_imagefolder(tmp_path / "t", classes=tuple(CIFAR10_CLASSES), n_train=2, n_test=1)
    s = load_splits(DataConfig(name="cifar10_jpg", root=str(root), val_fraction=0.0,
                               noise=NoiseConfig("asymmetric", 0.5)), cache_dir=cache_dir)
    assert s.train.classes == CIFAR10_CLASSES and s.meta["note"] == "CIFAR-10 (JPEG)"
    assert s.train.mean == (0.4914, 0.4822, 0.4465) and s.noise_mask.sum() == 5  # 1 of 2 in 5 source classes


# -------------------------------------------------------------------------------------- tinyimagenet
def test_tinyimagenet_folder_and_zip_use_val_annotations_as_test(tmp_path, cache_dir):
    base = make_tinyimagenet(tmp_path)
    raw, _, _ = load_raw(DataConfig(name="tinyimagenet", root=str(tmp_path)), cache_dir)
    assert raw.classes == ["n01", "n02"] and raw.x_train.shape == (4, 3, 8, 8)
    assert raw.y_train.tolist() == [0, 0, 1, 1] and raw.y_test.tolist() == [0, 1, 1]  # val_0 n01, val_1/2 n02
    assert abs(int(raw.x_train[2, 0, 4, 4]) - 60) <= 3 and raw.x_test.shape == (3, 3, 8, 8)  # grey -> RGB
    arch = _zip(base, tmp_path / "tiny.zip")
    raw2, _, _ = load_raw(DataConfig(name="tinyimagenet", root=str(arch)), cache_dir)
    assert torch.equal(raw2.x_train, raw.x_train) and torch.equal(raw2.y_test, raw.y_test)


# --------------------------------------------------------------------------------------------- mnist
def test_mnist_t10k_only_is_single_split_carved_by_test_split(tmp_path, cache_dir):
    make_mnist(tmp_path / "m", n=50)
    raw, _, _ = load_raw(DataConfig(name="mnist", root=str(tmp_path / "m")), cache_dir)
    assert raw.single_split and raw.x_train.shape == (50, 1, 28, 28)
    s = load_splits(DataConfig(name="mnist", root=str(tmp_path / "m"), val_fraction=0.0), cache_dir=cache_dir)
    assert len(s.train) == 40 and len(s.test) == 10 and torch.bincount(s.test.y).tolist() == [1] * 10
    assert s.meta["test_split"] == 0.2


def test_mnist_train_and_t10k_raw_files_are_two_splits(tmp_path, cache_dir):
    make_mnist(tmp_path, splits=("train", "t10k"), n=20, gz=False)
    raw, _, _ = load_raw(DataConfig(name="mnist", root=str(tmp_path)), cache_dir)
    assert not raw.single_split and raw.x_train.shape[0] == 20 and raw.x_test.shape[0] == 20
    expected = read_idx(tmp_path / "train-images-idx3-ubyte", "images")
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(expected.copy()))


def test_mnist_bad_magic_number_is_clear_error(tmp_path, cache_dir):
    make_mnist(tmp_path, n=5)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)), 2049)  # labels magic
    with pytest.raises(ValueError, match="magic number 2049.*expected 2051"):
        load_raw(DataConfig(name="mnist", root=str(tmp_path)), cache_dir)


# -------------------------------------------------------------------------------------------- digits
def test_digits_scaled_to_uint8_and_split_stratified(cache_dir):
    raw, _, _ = load_raw(DataConfig(name="digits"), cache_dir)
    assert raw.x_train.shape == (1797, 1, 8, 8) and raw.x_train.dtype == torch.uint8
    assert int(raw.x_train.max()) == 255 and int(raw.x_train.min()) == 0
    s = load_splits(DataConfig(name="digits", val_fraction=0.0), cache_dir=cache_dir)
    counts = torch.bincount(raw.y_train, minlength=10)
    assert torch.bincount(s.test.y, minlength=10).tolist() == torch.floor(counts * 0.2 + 0.5).long().tolist()
    assert 0 < s.train.mean[0] < 1 and s.in_chans == 1 and s.img_size == 8


def test_unknown_dataset_name_suggests_closest():
    with pytest.raises(SpecError) as e:
        load_splits(DataConfig(name="cifar1O"))
    assert e.value.path == "dataset.name" and "did you mean 'cifar10'" in str(e.value)
    assert set(DATASETS.names()) >= {"digits", "mnist", "cifar10", "cifar100", "imagefolder", "cifar10_jpg",
                                     "tinyimagenet"}


# --------------------------------------------------------------------------------------------- cache
def test_second_load_comes_from_cache_without_decoding(tmp_path, cache_dir, monkeypatch):
    make_imagefolder(tmp_path / "t")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "t"))
    first, fp, src = load_raw(cfg, cache_dir)
    files = list(cache_dir.glob("imagefolder-*.pt"))
    assert len(files) == 1 and not list(cache_dir.glob("*.tmp"))

    def boom(path):
        raise AssertionError("decoded again")
    monkeypatch.setattr(src, "decode", boom)
    again, fp2, _ = load_raw(cfg, cache_dir)
    assert fp2 == fp and torch.equal(again.x_train, first.x_train)
    # a changed source file changes the key and forces a decode
    _img(9).save(tmp_path / "t" / "train" / "ant" / "000.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_raw(cfg, cache_dir)


def test_corrupt_cache_file_is_rebuilt(tmp_path, cache_dir):
    make_imagefolder(tmp_path / "t")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "t"))
    first, _, _ = load_raw(cfg, cache_dir)
    (path,) = cache_dir.glob("imagefolder-*.pt")
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        again, _, _ = load_raw(cfg, cache_dir)
    assert torch.equal(again.x_train, first.x_train) and path.stat().st_size > 100


def test_concurrent_cache_builders_build_once(cache_dir):
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.3)
        return {"x": torch.arange(5, dtype=torch.uint8)}

    results = []
    threads = [threading.Thread(target=lambda: results.append(data_cache.cached("k", "f" * 64, build, cache_dir)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(torch.equal(r["x"], torch.arange(5, dtype=torch.uint8)) for r in results)


# ----------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-cache")


@pytest.mark.realdata
@pytest.mark.slow
def test_real_cifar10_jpg_loads_50k_10k_and_reloads_fast(shared_data, real_cache):
    cfg = DataConfig(name="cifar10_jpg", val_fraction=0.0)
    s = load_splits(cfg, cache_dir=real_cache)
    assert s.train.x.shape == (50000, 3, 32, 32) and s.test.x.shape == (10000, 3, 32, 32)
    assert s.num_classes == 10 and torch.bincount(s.test.y).tolist() == [1000] * 10
    assert s.meta["source_hash"] == "d877bdec11f54282b92da36e9f045bd305d663b1223e3822baff39ca9ff6690a"
    t = time.perf_counter()
    raw, _, _ = load_raw(cfg, real_cache)
    assert time.perf_counter() - t < 1.0
    assert torch.equal(raw.x_test, s.test.x)


@pytest.mark.realdata
def test_real_mnist_t10k_splits_into_train_and_test(shared_data, real_cache):
    s = load_splits(DataConfig(name="mnist", val_fraction=0.1), cache_dir=real_cache)
    assert len(s.train) + len(s.val) + len(s.test) == 10000 and len(s.test) == 2000
    assert s.train.x.shape[1:] == (1, 28, 28) and s.num_classes == 10
