"""Run directories: manifests, atomic saves, metrics logs and resume checks.

Every job writes into one directory. Files appear there only whole: each is written to a
temporary sibling and renamed into place, so an interrupted job never leaves a half-written
result that a later `--resume` or reader could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import torch

from pivotal_sae.errors import UserError

MANIFEST = "manifest.json"
PACKAGES = ("pivotal-sae", "torch", "transformers", "sae-lens", "safetensors", "numpy")


def code_version() -> dict[str, Any]:
    """The git commit of the source tree this package runs from (if any) and whether it is dirty."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{name}"


#: Names of temporary files and folders of writes in progress: `.NAME.XXXX.tmp`. Only a killed
#: process leaves one behind; `remove_partial_writes` clears them on resume.
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


@functools.cache
def default_file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the user's umask (read once; the
    umask can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """The one way a file reaches a run directory: yield a temporary sibling `.NAME.XXXX.tmp`
    to write, then rename it onto `path` only if the block succeeds (else remove it). Readers
    see the old file or the new one, never half of one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX,
                                   dir=path.parent)  # fmt: skip
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and safetensors, writing afresh) make files 0600; results are for sharing.
        os.chmod(tmp_path, default_file_mode())
        with open(tmp_path, "rb+") as f:  # whole on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def temporary_sibling(path: Path, what: str = "part") -> Path:
    """A fresh temporary name beside `path` (for a helper file or folder of a write in
    progress), named so that `remove_partial_writes` recognises it."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{what}.", suffix=TMP_SUFFIX,
                               dir=path.parent)  # fmt: skip
    os.close(fd)
    return Path(tmp)


def is_partial_write(path: Path) -> bool:
    return path.name.startswith(TMP_PREFIX) and path.name.endswith(TMP_SUFFIX)


def remove_partial_writes(directory: Path) -> list[Path]:
    """Remove what interrupted writes left under `directory` (temporary files and folders, at
    any depth); returns what was removed."""
    removed: list[Path] = []
    if not Path(directory).is_dir():
        return removed
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if is_partial_write(path):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        dirs[:] = [d for d in dirs if not is_partial_write(Path(root) / d)]
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_torch(path: Path, obj: Any) -> None:
    """`torch.save` for state that safetensors cannot hold (optimizer state, RNG states)."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata=dict(metadata or {}),
        )


def write_manifest(run_dir: Path, job: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Record what ran: job name, its full configuration, code version, package versions."""
    manifest = {
        "job": job,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": dict(config),
        "code_version": code_version(),
        "packages": package_versions(),
    }
    atomic_write_json(run_dir / MANIFEST, manifest)
    return manifest


def read_manifest(run_dir: Path, job: str | None = None) -> dict[str, Any]:
    """The manifest of an existing run, or a `UserError` saying why `run_dir` is not one."""
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory, so it cannot be a run to resume")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (it has no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config", {}), dict):
        raise UserError(f"{path} is damaged (not a run manifest)")
    if job is not None and manifest.get("job") != job:
        raise UserError(f"{run_dir} is a run of `{manifest.get('job')}`, not of `{job}`")
    return manifest


def check_new_run_dir(run_dir: Path, *, flag: str = "--out", resumable: bool = True) -> None:
    """Refuse, before any work and without writing, an `--out` that cannot become a new run
    directory: an existing file, a folder already holding files, a path under a file, or a
    place this process may not write."""
    run_dir = Path(run_dir)
    hint = "choose a new directory or --resume it" if resumable else "choose a new directory"
    if run_dir.exists() or run_dir.is_symlink():
        if not run_dir.is_dir():
            raise UserError(f"{flag} {run_dir} exists and is not a directory")
        # Only temporary files of a run killed while writing its manifest: not a run yet.
        if any(not is_partial_write(entry) for entry in run_dir.iterdir()):
            raise UserError(f"{flag} {run_dir} already holds files; {hint}")
        writable = run_dir
    else:
        writable = run_dir.absolute().parent
        while not writable.exists() and writable != writable.parent:
            writable = writable.parent
        if not writable.is_dir():
            raise UserError(f"{flag} {run_dir} cannot be created: {writable} is not a directory")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {run_dir} cannot be created: {writable} is not writable")


def prepare_new_run_dir(run_dir: Path, *, flag: str = "--out", resumable: bool = True) -> None:
    """Refuse to write a new run over files already there (use --resume to continue a run)."""
    check_new_run_dir(run_dir, flag=flag, resumable=resumable)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {run_dir} cannot be created ({exc.strerror or exc})") from None
    remove_partial_writes(run_dir)


class JsonlLog:
    """Append-only JSON-lines log that can be truncated back to a step on resume.

    The file stays open, line-buffered: each record reaches the operating system as one write
    when appended (so a killed process loses none), without reopening the file per record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def append(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._file.write(json.dumps(dict(record)) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def truncate_after(self, step: int, key: str = "step") -> None:
        """Drop records logged after `step` (they belong to work a resume will redo)."""
        self.close()  # the file is replaced, not rewritten in place
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            at = record.get(key, 0) if isinstance(record, dict) else None
            if isinstance(at, int | float) and at <= step:
                kept.append(line)  # anything else is not a record of this log: dropped
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UserError(f"unknown --dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for CUDA without a GPU is a user error."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name} was asked for, but no CUDA GPU is available here; "
                "use --device cpu"
            )
        return torch.device(name)
    raise UserError(f"unknown --device {name!r}; choose auto, cpu or cuda")


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory this machine can give a new job now without swapping (`MemAvailable`: free
    memory plus caches the kernel can drop), or None where the kernel does not say."""
    try:
        with open(meminfo) as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_bytes(device: torch.device | str = "cpu") -> int:
    """Memory a job on `device` can use now: the GPU's free memory, else this machine's
    available memory (its physical memory where that is unknown). Other processes' memory
    counts against it: a job that fits only in memory that is taken would fail or swap."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    available = available_memory_bytes()
    if available is not None:
        return available
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


def check_fits(needed_bytes: float, what: str, device: torch.device | str = "cpu") -> None:
    """Refuse up front, with one line, work whose tensors alone cannot fit on `device`."""
    available = memory_bytes(device)
    if needed_bytes > available:
        raise UserError(
            f"{what} needs about {needed_bytes / 2**30:,.1f} GiB but {torch.device(device).type} "
            f"memory available here is {available / 2**30:,.1f} GiB; make it smaller"
        )
