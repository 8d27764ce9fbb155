"""Raw image sources: digits, mnist, cifar10, cifar100, imagefolder, cifar10_jpg, tinyimagenet.

Each decodes its on-disk format once into uint8 tensors (RawData); `Source.load` caches the result keyed by a
hash of the source files. Archives (.tar/.tar.gz/.zip) are read in place, never extracted to disk.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import numpy as np
import torch

from bench.config import DataConfig, SpecError
import bench.data.cache as _cache
from bench.data.download import download_and_extract, download_root, download_url
from bench.data.registry import RawData, Source, register, resolve_root
from bench.paths import data_root

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


# ------------------------------------------------------------------------------------------ file trees
def _norm(name: str) -> str:
    return name.replace("\\", "/").lstrip("/").removeprefix("./")


def _hidden(name: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in name.split("/"))


def read_files(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """{relative posix name: bytes} of the files in a folder, tar(.gz/.bz2/.xz) or zip for which `want(name)`.

    Tarballs are read in one sequential pass (a gzip tarball under 2 GB is inflated in memory first, which is
    much faster than tarfile's streaming reader); nothing is extracted to disk.
    """
    path = Path(path)
    out: dict[str, bytes] = {}
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            rel = Path(dirpath).relative_to(path).as_posix()
            for f in sorted(filenames):
                name = f if rel == "." else f"{rel}/{f}"
                if want(name):
                    out[name] = (Path(dirpath) / f).read_bytes()
        return out
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = _norm(info.filename)
                if not info.is_dir() and want(name):
                    out[name] = zf.read(info)
        return out
    if tarfile.is_tarfile(path):
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if gz and path.stat().st_size < (2 << 30):
            raw = gzip.decompress(path.read_bytes())
            index = tar_index(raw)
            if index is None:  # something tar_index does not handle: let tarfile parse it
                with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
                    index = [(m.name, m.offset_data, m.size) for m in tf if m.isfile()]
            for name, offset, size in index:
                name = _norm(name)
                if want(name):
                    out[name] = raw[offset:offset + size]
        else:
            with tarfile.open(path, mode="r|*") as tf:
                for m in tf:
                    name = _norm(m.name)
                    if m.isfile() and want(name):
                        out[name] = tf.extractfile(m).read()  # type: ignore[union-attr]
        return out
    raise ValueError(f"{path} is neither a folder nor a tar/zip archive")


def tar_index(raw: bytes) -> Optional[list[tuple[str, int, int]]]:
    """(name, data offset, size) of the regular files of an uncompressed tar held in memory.

    A lean reader of ustar/GNU/pax headers (long names via GNU 'L' or pax 'path'), ~10x faster than tarfile
    on 60k small members. Returns None on anything it does not handle (bad checksum, sparse files, base-256
    sizes, pax 'size'), and the caller then falls back to tarfile.
    """
    out: list[tuple[str, int, int]] = []
    pos, n = 0, len(raw)
    long_name: Optional[str] = None
    u8 = np.frombuffer(raw, np.uint8)
    try:
        while pos + 512 <= n:
            hdr = raw[pos:pos + 512]
            if hdr.count(0) == 512:
                break
            stored = int(hdr[148:156].replace(b"\0", b" ").strip() or b"0", 8)
            if stored != int(u8[pos:pos + 512].sum(dtype=np.int64)) - int(u8[pos + 148:pos + 156].sum()) + 256:
                return None
            if hdr[124] & 0x80:
                return None
            size = int(hdr[124:136].replace(b"\0", b" ").strip() or b"0", 8)
            typ = hdr[156:157]
            data = pos + 512
            if typ == b"L":
                long_name = raw[data:data + size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif typ == b"x":
                rec, i = raw[data:data + size], 0
                while i < len(rec):
                    sp = rec.index(b" ", i)
                    length = int(rec[i:sp])
                    key, _, value = rec[sp + 1:i + length - 1].partition(b"=")
                    if key == b"path":
                        long_name = value.decode("utf-8", "surrogateescape")
                    elif key == b"size":
                        return None
                    i += length
            elif typ in (b"0", b"\0", b"7"):
                name = long_name
                if name is None:
                    name = hdr[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    if hdr[257:263] == b"ustar\0" and hdr[345] != 0:
                        prefix = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                        name = f"{prefix}/{name}"
                out.append((name, data, size))
                long_name = None
            elif typ in (b"1", b"2", b"3", b"4", b"5", b"6"):
                long_name = None
            elif typ not in (b"g", b"K"):
                return None
            pos = data + (size + 511) // 512 * 512
    except ValueError:
        return None
    return out


def source_fingerprint(path: Path, cache_dir: Optional[Path] = None) -> str:
    """sha256 of an archive (memoised under the cache folder); names+sizes+mtimes hash of a folder."""
    path = Path(path)
    if path.is_dir():
        return _cache.tree_fingerprint(path)
    return _cache.sha256_file(path, memo_dir=None if cache_dir is None else Path(cache_dir) / "sha256")


def decode_images(blobs: list[bytes], names: list[str], mode: str = "RGB") -> torch.Tensor:
    """PIL-decode encoded images (all the same size) into one uint8 [N, C, H, W] tensor (preallocated)."""
    from PIL import Image, UnidentifiedImageError

    chans = len(mode)
    out: Optional[np.ndarray] = None
    for i, (blob, name) in enumerate(zip(blobs, names)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.mode != mode:
                    im = im.convert(mode)
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot decode image {name}: {e}") from e
        if out is None:
            out = np.empty((len(blobs), arr.shape[0], arr.shape[1], chans), dtype=np.uint8)
        if arr.shape[:2] != out.shape[1:3]:
            raise ValueError(f"image {name} is {arr.shape[1]}x{arr.shape[0]} but {names[0]} is "
                             f"{out.shape[2]}x{out.shape[1]}; all images of a dataset must have one size")
        out[i] = arr.reshape(out.shape[1:])
    if out is None:
        return torch.empty((0, chans, 0, 0), dtype=torch.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def locate_download(cfg: DataConfig, *, dataset: str, folder: str, marker: str, archive: str, url: str,
                    md5: str) -> Path:
    """Find `folder/` (recognised by `marker`) or `archive` under dataset.root (or data_root(), download_root());
    download + extract it if `dataset.download`; else FileNotFoundError saying how to get it."""
    root = resolve_root(cfg.root)
    bases = [root] if root is not None else [data_root(), download_root()]
    for base in bases:
        if base.is_file():
            return base
        for cand in (base / folder, base):
            if (cand / marker).is_file():
                return cand
        if (base / archive).is_file():
            return base / archive
    if cfg.download:
        target = root if root is not None else download_root()
        download_and_extract(url, target, md5=md5, filename=archive)
        if not (target / folder / marker).is_file():
            raise FileNotFoundError(f"{dataset}: downloaded {url} but {target / folder / marker} is missing")
        return target / folder
    where = " or ".join(str(b) for b in bases)
    raise FileNotFoundError(f"{dataset}: found neither {folder}/ nor {archive} under {where}; "
                            f"set dataset.download: true to fetch {url} (or point dataset.root at the files)")


# ---------------------------------------------------------------------------------------------- digits
@register
class Digits(Source):
    """sklearn's 8x8 digits (1,797 images, values 0..16 scaled to 0..255), one split."""
    name = kind = "digits"
    sizes = (1797, 0, 1, 8, 10)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    note = "sklearn digits (8x8 grey, single split)"

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        import sklearn
        return _cache.text_fingerprint("sklearn.load_digits", sklearn.__version__)

    def decode(self, path: Optional[Path]) -> RawData:
        from sklearn.datasets import load_digits
        d = load_digits()
        x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
        return RawData(torch.from_numpy(x), torch.as_tensor(d.target, dtype=torch.int64), None, None,
                       [str(int(c)) for c in d.target_names])


# ----------------------------------------------------------------------------------------------- mnist
IDX_MAGIC = {"images": 2051, "labels": 2049}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def read_idx(path: Path, expect: str) -> np.ndarray:
    """Parse an IDX file (raw or .gz) with np.frombuffer; `expect` is 'images' (magic 2051) or 'labels' (2049)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if magic != IDX_MAGIC[expect]:
        raise ValueError(f"{path}: magic number {magic} (0x{max(magic, 0):08x}) is not an IDX {expect} file "
                         f"(expected {IDX_MAGIC[expect]})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    need = int(np.prod(dims)) * dtype.itemsize
    if len(data) - 4 - 4 * ndim != need:
        raise ValueError(f"{path}: header says {dims} ({need} bytes) but the body has {len(data) - 4 - 4 * ndim}")
    return np.frombuffer(data, dtype, int(np.prod(dims)), offset=4 + 4 * ndim).reshape(dims)


def mnist_files(folder: Path) -> dict[str, dict[str, Path]]:
    """{'train'|'t10k': {'images': path, 'labels': path}} for the pairs present (raw or .gz)."""
    found: dict[str, dict[str, Path]] = {}
    for split in ("train", "t10k"):
        pair = {}
        for what, stem in (("images", f"{split}-images-idx3-ubyte"), ("labels", f"{split}-labels-idx1-ubyte")):
            for cand in (folder / stem, folder / f"{stem}.gz"):
                if cand.is_file():
                    pair[what] = cand
                    break
        if len(pair) == 1:
            raise FileNotFoundError(f"mnist: {folder} has {next(iter(pair.values())).name} but not its "
                                    f"{'labels' if 'images' in pair else 'images'} file")
        if pair:
            found[split] = pair
    return found


@register
class Mnist(Source):
    """MNIST IDX files; with only t10k-* (or only train-*) present it is one split, carved by test_split."""
    name = kind = "mnist"
    sizes = (60000, 10000, 1, 28, 10)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    note = "MNIST"
    mean, std = (0.1307,), (0.3081,)

    def locate(self, cfg: DataConfig) -> Path:
        root = resolve_root(cfg.root)
        bases = [root] if root is not None else [data_root() / "mnist", download_root() / "mnist"]
        for base in bases:
            for cand in (base, base / "raw", base / "MNIST" / "raw"):
                if cand.is_dir() and mnist_files(cand):
                    return cand
        if cfg.download:
            target = root if root is not None else download_root() / "mnist"
            for fname, md5 in MNIST_MD5.items():
                download_url(MNIST_URL + fname, target / fname, md5)
            return target
        raise FileNotFoundError(f"mnist: no train-/t10k-images-idx3-ubyte[.gz] + labels under "
                                f"{' or '.join(map(str, bases))}; set dataset.download: true to fetch them "
                                f"from {MNIST_URL} (or point dataset.root at the folder)")

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        assert path is not None
        files = [p for pair in mnist_files(path).values() for p in pair.values()]
        return _cache.tree_fingerprint(path, files)

    def decode(self, path: Optional[Path]) -> RawData:
        assert path is not None
        found = mnist_files(path)
        arrays = {}
        for split, pair in found.items():
            x, y = read_idx(pair["images"], "images"), read_idx(pair["labels"], "labels")
            if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"mnist: {pair['images'].name} {x.shape} does not match {pair['labels'].name} {y.shape}")
            arrays[split] = (torch.from_numpy(x.astype(np.uint8)[:, None].copy()),
                             torch.from_numpy(y.astype(np.int64)))
        if len(arrays) == 2:
            (xtr, ytr), (xte, yte) = arrays["train"], arrays["t10k"]
        else:
            (xtr, ytr), (xte, yte) = next(iter(arrays.values())), (None, None)
        return RawData(xtr, ytr, xte, yte, [str(i) for i in range(10)])


# ----------------------------------------------------------------------------------------- cifar pickles
def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch (or any pickled dict of numpy arrays, lists, str/bytes/ints) needs."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        if hasattr(numeric, "_frombuffer"):
            allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for t in (list, dict, tuple, str, bytes, bytearray, int, float, bool, complex):
        allowed[("builtins", t.__name__)] = t
    allowed[("_codecs", "encode")] = _latin1  # how Python 3 pickles bytes with protocol 2
    return allowed


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "") != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, lists, dicts, str/bytes and numbers and nothing else: any other
    global (a function or class a planted file names, e.g. os.system) raises UnpicklingError instead of being
    imported and called. `source` names the file in the error."""

    def __init__(self, file, *, source: str, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.source = source
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load {module}.{name} (a CIFAR batch holds only numpy arrays, lists, "
                f"str/bytes and numbers)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self.source}: persistent ids are not allowed")


def safe_unpickle(blob: bytes, source: str) -> object:
    """`pickle.loads(blob, encoding="bytes")` through SafeUnpickler."""
    return SafeUnpickler(io.BytesIO(blob), source=source, encoding="bytes").load()


def _unpickle(blob: bytes, name: str) -> dict[str, object]:
    try:
        d = safe_unpickle(blob, name)
    except Exception as e:
        raise ValueError(f"{name}: not a CIFAR python pickle ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{name}: not a CIFAR python pickle (holds a {type(d).__name__}, not a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(d: dict[str, object], name: str) -> torch.Tensor:
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{name}: data has shape {data.shape}, expected [N, 3072]")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())


@register
class Cifar10(Source):
    """CIFAR-10, torchvision's python-pickle layout: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    name = kind = "cifar10"
    sizes = (50000, 10000, 3, 32, 10)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    note = "CIFAR-10"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    MD5 = "c58f30108f718f92721af3b95e74349a"
    FOLDER, ARCHIVE, MARKER = "cifar-10-batches-py", "cifar-10-python.tar.gz", "batches.meta"
    FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

    def locate(self, cfg: DataConfig) -> Path:
        return locate_download(cfg, dataset=self.name, folder=self.FOLDER, marker=self.MARKER,
                               archive=self.ARCHIVE, url=self.URL, md5=self.MD5)

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        assert path is not None
        return source_fingerprint(path, cache_dir)

    def _read(self, path: Path) -> dict[str, dict[str, object]]:
        wanted = set(self.FILES)
        blobs = read_files(path, lambda n: PurePosixPath(n).name in wanted and not _hidden(n))
        by_name: dict[str, dict[str, object]] = {}
        for n in sorted(blobs, key=len):  # the shallowest copy wins
            by_name.setdefault(PurePosixPath(n).name, _unpickle(blobs[n], n))
        return by_name

    def decode(self, path: Optional[Path]) -> RawData:
        assert path is not None
        files = self._read(path)
        train = [f for f in self.FILES[:5] if f in files]
        missing = [f for f in self.FILES[:6] if f not in files]
        if missing:
            raise FileNotFoundError(f"cifar10: {path} lacks {', '.join(missing)}")
        xs = [_cifar_images(files[f], f) for f in train]
        ys = [torch.as_tensor(np.asarray(files[f]["labels"]), dtype=torch.int64) for f in train]
        meta = files.get("batches.meta")
        classes = _names(meta["label_names"]) if meta else list(CIFAR10_CLASSES)
        test = files["test_batch"]
        return RawData(torch.cat(xs), torch.cat(ys), _cifar_images(test, "test_batch"),
                       torch.as_tensor(np.asarray(test["labels"]), dtype=torch.int64), classes)


@register
class Cifar100(Cifar10):
    """CIFAR-100, cifar-100-python/train, test, meta; fine labels plus the fine->coarse (superclass) map."""
    name = kind = "cifar100"
    sizes = (50000, 10000, 3, 32, 100)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    note = "CIFAR-100"
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
    FOLDER, ARCHIVE, MARKER = "cifar-100-python", "cifar-100-python.tar.gz", "meta"
    FILES = ["train", "test", "meta"]

    def decode(self, path: Optional[Path]) -> RawData:
        assert path is not None
        files = self._read(path)
        missing = [f for f in self.FILES if f not in files]
        if missing:
            raise FileNotFoundError(f"cifar100: {path} lacks {', '.join(missing)}")
        classes = _names(files["meta"]["fine_label_names"])
        coarse_classes = _names(files["meta"]["coarse_label_names"])
        out = {}
        f2c = np.full(len(classes), -1, dtype=np.int64)
        for split in ("train", "test"):
            d = files[split]
            fine = np.asarray(d["fine_labels"], dtype=np.int64)
            coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
            f2c[fine] = coarse
            out[split] = (_cifar_images(d, split), torch.from_numpy(fine), fine, coarse)
        for split in ("train", "test"):
            _, _, fine, coarse = out[split]
            if not np.array_equal(f2c[fine], coarse):
                raise ValueError(f"cifar100: {split} maps one fine class to several coarse classes")
        return RawData(out["train"][0], out["train"][1], out["test"][0], out["test"][1], classes,
                       fine_to_coarse=[int(c) for c in f2c], coarse_classes=coarse_classes)


# ----------------------------------------------------------------------------------------- imagefolder
def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTS and not _hidden(name)


def decode_imagefolder(path: Path) -> RawData:
    """`train/<class>/*` and `test/<class>/*` (any common prefix) from a folder or archive; classes = sorted
    train folder names; without a test/ folder the set is a single split."""
    def want(n: str) -> bool:
        parts = n.split("/")
        return len(parts) >= 3 and parts[-3] in ("train", "test") and _is_image(n)

    blobs = read_files(path, want)
    if not blobs:
        raise FileNotFoundError(f"imagefolder: no train/<class>/<image> files in {path}")
    prefixes = {n.rsplit("/", 3)[0] if n.count("/") >= 3 else "" for n in blobs}
    if len(prefixes) > 1:
        raise ValueError(f"imagefolder: {path} holds several train/test trees (under {sorted(prefixes)[:3]}); "
                         f"point dataset.root at one of them")
    names = sorted(blobs)
    split_of = [n.split("/")[-3] for n in names]
    cls_of = [n.split("/")[-2] for n in names]
    classes = sorted({c for s, c in zip(split_of, cls_of) if s == "train"})
    if not classes:
        raise FileNotFoundError(f"imagefolder: {path} has test/ but no train/<class>/ images")
    stray = sorted({c for s, c in zip(split_of, cls_of) if s == "test"} - set(classes))
    if stray:
        raise ValueError(f"imagefolder: test classes {stray} have no train/ folder in {path}")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "test"):
        sel = [i for i, s in enumerate(split_of) if s == split]
        if sel:
            x = decode_images([blobs[names[i]] for i in sel], [names[i] for i in sel])
            y = torch.tensor([index[cls_of[i]] for i in sel], dtype=torch.int64)
            out[split] = (x, y)
    xte, yte = out.get("test", (None, None))
    return RawData(out["train"][0], out["train"][1], xte, yte, classes)


@register
class ImageFolder(Source):
    """A folder or .tar(.gz)/.zip with train/<class>/* and test/<class>/* (RGB); `dataset.root` required."""
    name = kind = "imagefolder"
    note = "ImageFolder"

    def locate(self, cfg: DataConfig) -> Path:
        if cfg.root is None:
            raise SpecError("dataset.root", None, f"a folder or .tar(.gz)/.zip holding train/<class>/* and "
                                                  f"test/<class>/* (required for dataset.name: {self.name})")
        path = resolve_root(cfg.root)
        assert path is not None
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: dataset.root {cfg.root!r} does not exist ({path.resolve()})")
        return path

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        assert path is not None
        return source_fingerprint(path, cache_dir)

    def decode(self, path: Optional[Path]) -> RawData:
        assert path is not None
        return decode_imagefolder(path)


@register
class Cifar10Jpg(ImageFolder):
    """CIFAR-10 as an ImageFolder of JPEGs (default: data_root()/cifar10-jpg.tar.gz), CIFAR-10 class names."""
    name = "cifar10_jpg"
    sizes = (50000, 10000, 3, 32, 10)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    kind = "imagefolder"
    note = "CIFAR-10 (JPEG)"
    mean, std = Cifar10.mean, Cifar10.std
    DEFAULT = "cifar10-jpg.tar.gz"

    def locate(self, cfg: DataConfig) -> Path:
        path = resolve_root(cfg.root) if cfg.root is not None else data_root() / self.DEFAULT
        assert path is not None
        if not path.exists():
            raise FileNotFoundError(f"cifar10_jpg: {path} does not exist; set dataset.root to the CIFAR-10 "
                                    f"ImageFolder tree or tarball (or FORGETBENCH_DATA to the data folder)")
        return path

    def finish(self, raw: RawData) -> RawData:
        if raw.classes != CIFAR10_CLASSES:
            if len(raw.classes) != 10:
                raise ValueError(f"cifar10_jpg: expected the 10 CIFAR-10 class folders, found {raw.classes}")
            if set(raw.classes) != set(CIFAR10_CLASSES):
                warnings.warn(f"cifar10_jpg: class folders {raw.classes} renamed to CIFAR-10 names in sorted order")
            raw.classes = list(CIFAR10_CLASSES)
        return raw


# ---------------------------------------------------------------------------------------- tinyimagenet
def decode_tinyimagenet(path: Path) -> RawData:
    """tiny-imagenet-200: wnids.txt, train/<wnid>/images/*.JPEG, val/images/* + val/val_annotations.txt
    (the labelled val split is the test split). Classes = sorted wnids. Folder or zip."""
    def want(n: str) -> bool:
        parts = n.split("/")
        if _hidden(n):
            return False
        if parts[-1] == "wnids.txt" or parts[-2:] == ["val", "val_annotations.txt"]:
            return True
        if not _is_image(n) or len(parts) < 3 or parts[-2] != "images":
            return False
        return parts[-3] == "val" or (len(parts) >= 4 and parts[-4] == "train")

    blobs = read_files(path, want)
    wnid_files = sorted((n for n in blobs if n.split("/")[-1] == "wnids.txt"), key=len)
    if not wnid_files:
        raise FileNotFoundError(f"tinyimagenet: no wnids.txt in {path}")
    base = wnid_files[0][: -len("wnids.txt")]  # '' or 'tiny-imagenet-200/'
    blobs = {n[len(base):]: b for n, b in blobs.items() if n.startswith(base)}
    classes = sorted(set(blobs["wnids.txt"].decode().split()))
    index = {c: i for i, c in enumerate(classes)}
    train = sorted(n for n in blobs if n.startswith("train/") and n.count("/") == 3)
    bad = sorted({n.split("/")[1] for n in train} - set(classes))
    if bad:
        raise ValueError(f"tinyimagenet: train folders {bad[:5]} are not in wnids.txt")
    if "val/val_annotations.txt" not in blobs:
        raise FileNotFoundError(f"tinyimagenet: no val/val_annotations.txt in {path}")
    label_of = {}
    for line in blobs["val/val_annotations.txt"].decode().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            label_of[fields[0].strip()] = fields[1].strip()
    val = sorted(n for n in blobs if n.startswith("val/images/"))
    unlabelled = [n for n in val if label_of.get(n.split("/")[-1]) not in index]
    if unlabelled:
        raise ValueError(f"tinyimagenet: {len(unlabelled)} val images lack a known wnid in val_annotations.txt "
                         f"(e.g. {unlabelled[0]})")
    if not train:
        raise FileNotFoundError(f"tinyimagenet: no train/<wnid>/images/* in {path}")
    xtr = decode_images([blobs[n] for n in train], train)
    ytr = torch.tensor([index[n.split("/")[1]] for n in train], dtype=torch.int64)
    xte = decode_images([blobs[n] for n in val], val)
    yte = torch.tensor([index[label_of[n.split("/")[-1]]] for n in val], dtype=torch.int64)
    return RawData(xtr, ytr, xte, yte, classes)


@register
class TinyImageNet(Source):
    """Tiny ImageNet-200 (64x64 RGB, 100k train, the 10k labelled val images as test); folder or the zip."""
    name = kind = "tinyimagenet"
    sizes = (100000, 10000, 3, 64, 200)   # full train, test (0: one split), channels, image side, classes (for cost estimates)
    note = "Tiny ImageNet-200 (val as test)"
    mean, std = (0.480, 0.448, 0.398), (0.277, 0.269, 0.282)
    URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
    FOLDER, ARCHIVE, MARKER = "tiny-imagenet-200", "tiny-imagenet-200.zip", "wnids.txt"

    def locate(self, cfg: DataConfig) -> Path:
        return locate_download(cfg, dataset=self.name, folder=self.FOLDER, marker=self.MARKER,
                               archive=self.ARCHIVE, url=self.URL, md5=self.MD5)

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        assert path is not None
        return source_fingerprint(path, cache_dir)

    def decode(self, path: Optional[Path]) -> RawData:
        assert path is not None
        return decode_tinyimagenet(path)
