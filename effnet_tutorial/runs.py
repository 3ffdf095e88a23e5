"""A training run's folder: what keeps it whole through crashes, full disks and a second run.

Checkpoints are written atomically (:func:`atomic_save`: a temporary file, then a rename), so a
run killed at any moment leaves the previous checkpoint intact, and a failed write removes its
partial file and says why. :func:`check_writable` finds an unwritable folder or a full disk before
training rather than at the first save; :class:`RunLock` keeps two runs out of one folder;
:data:`RUN_FILES` names the files a run owns (what the command line's ``--overwrite`` removes).
A checkpoint holds every RNG state (:func:`rng_state`, :func:`set_rng_state`) in types that
``torch.load(weights_only=True)`` reads. Resuming compares the saved run's settings with the new
one's (:func:`run_mismatches`), and moves the ``metrics.jsonl`` lines of the steps it redoes to
``metrics.redone.jsonl`` (:func:`drop_metrics_after`), so no step is logged twice and no line is
lost. :class:`~effnet_tutorial.train.Trainer` and the command line use all of these.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import socket
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact. A failed write (a full disk, a folder that
    became read-only) removes the partial temporary file and raises ``OSError`` naming the path
    and the cause.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch's C++ writer raises RuntimeError
        tmp.unlink(missing_ok=True)
        code = getattr(err, "errno", None)
        if code is None and shutil.disk_usage(path.parent).free < (1 << 20):
            code = errno.ENOSPC  # what the C++ writer's "file write failed" meant
        cause = (f"{errno.errorcode.get(code, code)}: {os.strerror(code)}" if code
                 else " ".join(str(err).split())[:200])
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was saved"
        raise OSError(code or errno.EIO,
                      f"could not write {path} ({cause}); {kept}. Free some space or make the "
                      "folder writable, then resume") from err


def rng_state() -> dict:
    """Every RNG state, in types ``torch.load(weights_only=True)`` reads (tensors, numbers)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states that :func:`rng_state` captured (CUDA's only where CUDA is here)."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


#: The files a training run writes into its output folder (what ``--overwrite`` removes).
RUN_FILES = ("last.pth", "model.pth", "metrics.jsonl", "metrics.redone.jsonl", "curves.png",
             "last.pth.tmp", "model.pth.tmp", "metrics.jsonl.tmp")


def check_writable(folder: Path, needed_bytes: int = 0) -> None:
    """Create ``folder``, write and delete a probe file in it, and check ``needed_bytes`` are
    free: an unwritable folder or a full disk is found before training, not at the first save."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"\0" * 4096)
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot write in the output folder {folder} "
                                 f"({err.strerror or err}); choose another folder") from err
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(errno.ENOSPC, f"{folder} has {free / 1e6:.0f} MB free, but this run's "
                                    f"checkpoints need about {needed_bytes / 1e6:.0f} MB; free "
                                    "some space or choose another folder")


class RunLock:
    """An exclusive claim on an output folder while a run trains into it: ``train.lock``, created
    with ``O_EXCL`` and holding the owner's pid and host.

    A second run into the same folder fails at once with ``FileExistsError`` naming the folder
    and the pid. A lock left by a process that no longer runs (a killed run) is taken over with a
    warning. Re-entrant within a process (the command line holds it around ``Trainer.fit``, which
    takes it too); released, and the file removed, on exit.
    """

    NAME: ClassVar[str] = "train.lock"
    _held: ClassVar[dict[str, int]] = {}  # lock path -> depth, in this process

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.NAME

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise ``FileExistsError`` if a live process holds it."""
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key] += 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if attempt == 0 and owner is not None and self._is_stale(owner):
                    warnings.warn(f"took over the lock {self.path} of process {owner['pid']}, "
                                  "which no longer runs (a run that was killed)", stacklevel=3)
                    self.path.unlink(missing_ok=True)
                    continue
                raise FileExistsError(self._busy_message(owner)) from None
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": datetime.now().isoformat(sep=" ", timespec="seconds")}, f)
            self._held[key] = 1
            return

    def release(self) -> None:
        """Give the lock back; the last release removes the file (if it is still ours)."""
        key = str(self.path.resolve())
        depth = self._held.get(key, 0) - 1
        if depth > 0:
            self._held[key] = depth
            return
        self._held.pop(key, None)
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def _owner(self) -> dict | None:
        """The lock file's content; ``{}`` if unreadable (being written), None if gone."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, owner: dict) -> bool:
        """True if the owner is a process of this machine that no longer runs."""
        if "pid" not in owner:  # being written, or garbage: stale only once it is old
            return datetime.now().timestamp() - self.path.stat().st_mtime > 60
        if owner.get("host") != socket.gethostname() or os.name == "nt":
            return False  # another machine's process, or no signal 0 to ask with: cannot tell
        if owner["pid"] == os.getpid():
            return True  # this process does not hold it (see acquire): a leftover
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            return False
        return False

    def _busy_message(self, owner: dict | None) -> str:
        who = (f"process {owner['pid']} on {owner.get('host')}, since {owner.get('started')}"
               if owner and "pid" in owner else "another process")
        return (f"the output folder {self.folder} is in use by another training ({who}; lock "
                f"file {self.path}). Wait for it to finish or choose another folder; if no "
                "training runs there, delete the lock file")


def run_mismatches(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why a run described by ``saved`` (a checkpoint's meta) cannot be continued as ``current``
    describes it; empty if it can. Keys absent from either side are not compared."""
    def differs(key: str) -> bool:
        a, b = saved.get(key), current.get(key)
        return a is not None and b is not None and _plain(a) != _plain(b)

    problems = []
    for key, what in (("model", "model"), ("model_options", "model options"),
                      ("num_classes", "class count"), ("class_names", "class names"),
                      ("image_size", "input size")):
        if differs(key):
            problems.append(f"{what}: checkpoint {saved[key]}, this run {current[key]}")
    if differs("batch_size") or differs("world_size"):
        problems.append(
            f"batch: checkpoint {saved.get('batch_size')} images x {saved.get('world_size')} "
            f"process(es), this run {current.get('batch_size')} x {current.get('world_size')}. The "
            "step count, the data order and the schedule are counted in the checkpoint's "
            "batches, so another batch would not continue the same run; use its batch size (and "
            "number of processes), or start a new run")
    saved_opt = (saved.get("train_config") or {}).get("optimizer")
    current_opt = (current.get("train_config") or {}).get("optimizer")
    if saved_opt and current_opt and saved_opt != current_opt:
        problems.append(f"optimizer: checkpoint {saved_opt}, this run {current_opt} (their "
                        "states differ)")
    return problems


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so that a value compares equal to its loaded copy."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def drop_metrics_after(metrics_path: Path, step: int) -> int:
    """Move the lines of ``metrics_path`` (a run's ``metrics.jsonl``) of steps after ``step``, and
    a line cut off by a kill, to ``metrics.redone.jsonl`` beside it; the file is rewritten
    atomically. Returns how many moved (0 if there is no such file)."""
    if not metrics_path.is_file():
        return 0
    keep, moved = [], []
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            late = isinstance(record.get("step"), (int, float)) and record["step"] > step
        except (ValueError, AttributeError):
            late = True
        (moved if late else keep).append(line + "\n")
    if moved:
        with open(metrics_path.with_name("metrics.redone.jsonl"), "a") as f:
            f.writelines(moved)
        tmp = metrics_path.with_name(metrics_path.name + ".tmp")
        tmp.write_text("".join(keep))
        os.replace(tmp, metrics_path)
        print(f"{metrics_path}: moved {len(moved)} line(s) after step {step}, which "
              "this run redoes, to metrics.redone.jsonl")
    return len(moved)
