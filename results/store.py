"""The parquet result store: atomic writes, tolerant reads, resume by cell id, any filesystem.

Layout under the store root::

    cells/<cell_id>.<attempt>.parquet  one file per finished cell attempt (ok or failed)
    cells/part-<hash>.parquet          compacted cells (many cells per file, see ``compact``)
    predictions/<cell_id>.parquet      per-example predictions of a cell
    curves/<cell_id>.parquet           a cell's training curve (step, metric, value, split)
    sweeps/<run_id>-<random>.json      what a sweep set out to run (``suite status`` reads it)
    <table>/<name>.parquet             other tables (e.g. ``kernels``)
    quarantine/<folder>/<name>         unreadable files, moved aside (``<stem>~2.parquet`` when taken)

The root is a local folder (a shared POSIX path works for every node that mounts it) or a
URI of any filesystem pyarrow opens (``s3://bucket/prefix``, ``gs://...``, ``file:///...``),
or that fsspec opens (``memory://`` in tests, ``az://`` with adlfs), so workers need no
shared disk.

Writes are atomic: a file is written to a hidden temporary name in its folder and renamed
into place (on object stores one put is atomic already, so it is written directly). A
process killed at any moment leaves complete files or ignorable temporary ones. Reads skip
a file that cannot be read and name it in a warning; it is moved to ``quarantine/`` under its
own folder and name, never deleted and never over another file.

Concurrent writers (the workers of a cluster executor, two drivers on one store) never
lose or duplicate a cell. A record's identity is its cell id plus an attempt id; every
attempt is its own file, written once and never overwritten, so no two writers ever touch
the same cell file. The reader keeps one record per cell, the newest attempt (by
``finished_at``, then attempt id), taken whole from one file. ``compact`` deletes only the
files it folded into its part file, so a record written while it runs survives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from suite.errors import UserError
from suite.faults import checkpoint
from suite.results.schema import COLUMNS, SCHEMA_VERSION, STATUS_OK

CELLS = "cells"
PREDICTIONS = "predictions"
CURVES = "curves"
SWEEPS = "sweeps"
QUARANTINE = "quarantine"  # unreadable files are moved here, named, never deleted
# The folders a store writes; a folder holding one of them (or nothing yet) is a result store.
STORE_FOLDERS = (CELLS, PREDICTIONS, CURVES, SWEEPS, QUARANTINE)
# How many numbered names (``x~2.parquet`` ...) a move tries before random ones.
_NUMBERED_NAMES = 100
# Which attempt of a cell a record is: one id per written record, so two records of one cell
# (a re-run, a second driver) are told apart and the reader keeps exactly one.
ATTEMPT = "attempt_id"
# How often a reader lists a table again when a file vanished under it (compacted meanwhile).
_READ_TRIES = 5
# Protocols whose single put is atomic (objects appear whole or not at all).
_OBJECT_STORES = {"s3", "s3a", "gcs", "gs", "abfs", "abfss", "az", "memory", "mock"}


def _free_names(name: str) -> Iterator[str]:
    """Names to try for a moved file: its own, then numbered (``x~2.parquet``), then random ones."""
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if stem else (name, "")
    yield name
    for n in range(2, _NUMBERED_NAMES + 2):
        yield f"{stem}~{n}{suffix}"
    while True:
        yield f"{stem}~{uuid.uuid4().hex[:12]}{suffix}"


def _shown(text: object) -> str:
    """``text`` for a warning line: control characters written as escapes, so a hostile file name
    can neither drive the terminal nor hide, and still names the file to look for."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def new_sweep_record(run_id: str) -> str:
    """A sweep record's name: the run id people read, and random bits, since run ids have
    one-second resolution and two drivers started in one second must not share a record."""
    return f"{run_id}-{uuid.uuid4().hex[:8]}"


def new_attempt_id() -> str:
    """A fresh attempt id: a time prefix (for people reading the files) and random bits."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


# -- filesystems ----------------------------------------------------------------------------------
class _LocalFiles:
    """A local (or mounted shared) folder: temp file, fsync, os.replace."""

    remote = False

    def __init__(self, root: Path):
        self.root = root

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def list(self, folder: str) -> list[Path]:
        where = self.root / folder
        return sorted(where.glob("*.parquet")) if where.is_dir() else []

    def list_names(self, folder: str, suffix: str) -> list[Path]:
        where = self.root / folder
        return sorted(p for p in where.glob(f"*{suffix}") if not p.name.startswith(".")) \
            if where.is_dir() else []

    def write(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            checkpoint("store.write.tmp_written")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves no temporary file behind
            raise
        return path

    def move(self, path: Path, folder: str) -> Path:
        """Move ``path`` to ``folder/<its own folder>/<its name>``, never over another file.

        A name is claimed by creating it exclusively (O_EXCL) and only then replaced by the file,
        so two readers quarantining same-named files (one after the other, or at once) keep both.
        """
        where = self.root / folder / path.parent.relative_to(self.root)
        where.mkdir(parents=True, exist_ok=True)
        for name in _free_names(path.name):
            target = where / name
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            try:
                os.replace(path, target)
            except BaseException:
                target.unlink(missing_ok=True)  # give the claimed name back (the file vanished meanwhile)
                raise
            return target
        raise AssertionError("unreachable: _free_names never ends")

    def read_table(self, path: Path) -> pa.Table:
        return pq.read_table(path, use_threads=False)

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def exists(self, path: Path | None = None) -> bool:
        return (path or self.root).exists()

    def is_store(self) -> bool:
        try:
            if not self.root.is_dir():
                return False
            entries = [p for p in self.root.iterdir() if not p.name.startswith(".")]
            if not entries or any(p.name in STORE_FOLDERS and p.is_dir() for p in entries):
                return True
            return any(p.is_dir() and next(p.glob("*.parquet"), None) is not None for p in entries)
        except OSError:  # a folder this user cannot list is no store of theirs
            return False


class _ArrowFiles:
    """A pyarrow filesystem (native, or fsspec's through pyarrow's handler) under a base path."""

    remote = True

    def __init__(self, uri: str, fs: Any, base: str, protocol: str):
        self.uri = uri.rstrip("/")
        self.fs = fs
        self.base = base.rstrip("/")
        self.scheme = uri.split("://", 1)[0]
        self.direct_put = protocol in _OBJECT_STORES

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def name(self, path: str) -> str:
        """The user-facing name of a file: the store's URI and the path under it."""
        return self.uri + path[len(self.base):] if path.startswith(self.base) else path

    def _infos(self, folder: str) -> list[Any]:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(pafs.FileSelector(self.path(folder), allow_not_found=True))

    def list(self, folder: str) -> list[str]:
        return self.list_names(folder, ".parquet")

    def list_names(self, folder: str, suffix: str) -> list[str]:
        from pyarrow import fs as pafs

        found = [i.path for i in self._infos(folder) if i.type == pafs.FileType.File
                 and i.base_name.endswith(suffix) and not i.base_name.startswith(".")]
        return sorted(found)

    def write(self, path: str, data: bytes) -> str:
        folder = path.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        if self.direct_put:  # one put: the object appears whole or not at all
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return path
        tmp = f"{folder}/.{path.rsplit('/', 1)[1]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            checkpoint("store.write.tmp_written")
            self.fs.move(tmp, path)
        except BaseException:
            self.delete(tmp)
            raise
        return path

    def move(self, path: str, folder: str) -> str:
        """Move ``path`` to ``folder/<its own folder>/<its name>``, on a name nothing holds yet.

        Object stores have no exclusive create, so the name is looked up first: only two readers
        moving the very same file at the same moment could meet on one name.
        """
        from pyarrow import fs as pafs

        inside, _, name = path[len(self.base):].strip("/").rpartition("/")
        where = "/".join(p for p in (self.base, folder, inside) if p)
        self.fs.create_dir(where, recursive=True)
        for candidate in _free_names(name):
            target = f"{where}/{candidate}"
            if self.fs.get_file_info(target).type == pafs.FileType.NotFound:
                self.fs.move(path, target)
                return target
        raise AssertionError("unreachable: _free_names never ends")

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as src:
            return src.read()

    def read_table(self, path: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(path)), use_threads=False)

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def exists(self, path: str | None = None) -> bool:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(path or self.base)
        return info.type != pafs.FileType.NotFound

    def is_store(self) -> bool:
        from pyarrow import fs as pafs

        if self.fs.get_file_info(self.base).type == pafs.FileType.File:
            return False
        entries = [i for i in self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
                   if not i.base_name.startswith(".")]
        folders = [i for i in entries if i.type == pafs.FileType.Directory]
        if not entries or any(i.base_name in STORE_FOLDERS for i in folders):
            return True
        return any(self.list(i.base_name) for i in folders)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def is_uri(root: str | os.PathLike) -> bool:
    return isinstance(root, str) and "://" in root


def _open_filesystem(root: str | os.PathLike) -> _LocalFiles | _ArrowFiles:
    """A local folder, or the pyarrow (or fsspec) filesystem a URI names."""
    if not is_uri(root):
        return _LocalFiles(Path(root))
    uri = str(root)
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "file":
        from urllib.parse import unquote, urlparse

        return _LocalFiles(Path(unquote(urlparse(uri).path)))
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(uri)
        return _ArrowFiles(uri, fs, base, scheme)
    except pa.ArrowInvalid:  # a scheme pyarrow has no filesystem for: try fsspec's
        pass
    except OSError as exc:
        raise UserError(f"cannot open the result store '{uri}': {exc}") from None
    try:
        import fsspec

        fs, base = fsspec.core.url_to_fs(uri)
    except ImportError:
        raise UserError(f"the result store '{uri}' needs a filesystem for '{scheme}://': pyarrow has "
                        f"none, and fsspec is not installed (pip install fsspec)") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot open the result store '{uri}': {exc} (pyarrow opens file://, s3://, "
                        f"gs://, hdfs://; fsspec's plugins add others, e.g. adlfs for az://)") from None
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return _ArrowFiles(uri, pafs.PyFileSystem(pafs.FSSpecHandler(fs)), base, str(protocol))


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _combine(tables: list[pa.Table]) -> tuple[pd.DataFrame, pd.Series]:
    """The rows of many files as one DataFrame, and the number of the file each row came from.

    One Arrow concatenation and one conversion to pandas, instead of a DataFrame per file:
    reading a store as runs write it (one small file per cell) is dominated by per-file
    overhead. Files whose columns differ (older schema versions) are aligned by name; types
    Arrow cannot unify fall back to pandas' concatenation, which gives the same rows.
    """
    try:
        frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    source = pd.Series(np.repeat(np.arange(len(tables)), [t.num_rows for t in tables]), index=frame.index)
    return frame, source


def _newest_records(frame: pd.DataFrame, source: pd.Series) -> pd.Series:
    """A row mask keeping one record per cell: its newest attempt, taken from one file.

    ``source`` numbers the file each row came from, so a record present in two files (a
    compaction killed or racing before it removed the singles) is kept once.
    """
    finished = frame["finished_at"].fillna("").astype(str) if "finished_at" in frame \
        else pd.Series("", index=frame.index)
    attempt = frame[ATTEMPT].fillna("").astype(str) if ATTEMPT in frame \
        else pd.Series("", index=frame.index)
    key = pd.DataFrame({"cell_id": frame["cell_id"].astype(str), "finished": finished,
                        "attempt": attempt, "source": source.to_numpy()}, index=frame.index)
    winners = key.sort_values(["cell_id", "finished", "attempt", "source"], kind="stable") \
        .drop_duplicates("cell_id", keep="last")
    chosen = pd.MultiIndex.from_frame(winners[["cell_id", "attempt", "source"]])
    return pd.MultiIndex.from_frame(key[["cell_id", "attempt", "source"]]).isin(chosen)


class ResultStore:
    """A folder (or object-store prefix) of parquet files holding results; safe against kills
    and concurrent writers."""

    def __init__(self, root: str | os.PathLike):
        self._fs = _open_filesystem(root)
        # A local store's root is a Path (callers join paths onto it); a remote one its URI.
        self.root: Path | str = self._fs.root if isinstance(self._fs, _LocalFiles) else self._fs.uri

    @property
    def uri(self) -> str:
        """Where every process (a worker, a SLURM job) finds this store: an absolute path or a URI."""
        return os.path.abspath(self.root) if isinstance(self.root, Path) else str(self.root)

    @property
    def remote(self) -> bool:
        return self._fs.remote

    def shared_with_other_processes(self) -> bool:
        """False for a store that lives in this process only (``memory://``, ``mock://``)."""
        return not (isinstance(self._fs, _ArrowFiles) and self._fs.scheme in {"memory", "mock"})

    def exists(self) -> bool:
        return self._fs.exists()

    def is_store(self) -> bool:
        """Whether the root is a result store: a folder that is empty (made by a run that wrote
        nothing yet) or holds a folder the store writes or a table of parquet files. A file, or a
        folder such as ``/``, is not, so a mistyped path is not reported as an empty store."""
        return self._fs.is_store()

    def _name(self, path: Any) -> Any:
        return self._fs.name(path) if isinstance(self._fs, _ArrowFiles) else path

    # -- writing --------------------------------------------------------------------------
    def write_cell(self, rows: list[dict], attempt: str | None = None) -> Path | str:
        """Write all rows of one cell (same ``cell_id``) as one new record, atomically.

        Every call writes a new file (``<cell_id>.<attempt>.parquet``) and overwrites none: a
        re-run of the cell supersedes the older record when read, and two writers of one
        cell never touch the same file.
        """
        if not rows:
            raise ValueError("a cell record needs at least one row")
        cell_id = rows[0]["cell_id"]
        attempt = attempt or rows[0].get(ATTEMPT) or new_attempt_id()
        frame = pd.DataFrame(rows)
        for column in COLUMNS:
            if column not in frame:
                frame[column] = None
        frame["schema_version"] = SCHEMA_VERSION
        frame[ATTEMPT] = attempt
        frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
        return self._fs.write(self._fs.path(CELLS, f"{cell_id}.{attempt}.parquet"), _parquet_bytes(frame))

    def write_predictions(self, cell_id: str, frame: pd.DataFrame) -> Path | str:
        frame = frame.copy()
        frame.insert(0, "cell_id", cell_id)
        return self._fs.write(self._fs.path(PREDICTIONS, f"{cell_id}.parquet"), _parquet_bytes(frame))

    def write_curve(self, cell_id: str, frame: pd.DataFrame) -> Path | str:
        frame = frame.copy()
        frame.insert(0, "cell_id", cell_id)
        return self._fs.write(self._fs.path(CURVES, f"{cell_id}.parquet"), _parquet_bytes(frame))

    def load_curves(self, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Training curves of the given cells (all when None), long form with a cell_id column."""
        tables, _, _ = self._read(self._by_cell(CURVES, cell_ids))
        return _combine(tables)[0] if tables else pd.DataFrame()

    def write_table(self, table: str, frame: pd.DataFrame, name: str | None = None) -> Path | str:
        """Append a batch of rows to another table (e.g. kernel timings) as one new file."""
        if table in (CELLS, PREDICTIONS, CURVES, SWEEPS):
            raise ValueError(f"use write_cell / write_predictions / write_curve / write_sweep for '{table}'")
        name = name or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        return self._fs.write(self._fs.path(table, f"{name}.parquet"), _parquet_bytes(frame))

    def write_sweep(self, record: str, manifest: dict[str, Any]) -> Path | str:
        """Record what a sweep set out to run (its cells, executor, options) for ``suite status``.

        ``record`` names the file: one driver writes its one record more than once (job ids
        arrive later), while two drivers must never share one (``new_sweep_record``).
        """
        data = json.dumps(manifest | {"record": record}, indent=1, sort_keys=True, default=str).encode()
        return self._fs.write(self._fs.path(SWEEPS, f"{record}.json"), data)

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep manifest in the store, oldest first; unreadable or foreign ones are named and skipped."""
        out = []
        for path in self._fs.list_names(SWEEPS, ".json"):
            try:
                manifest = json.loads(self._fs.read_bytes(path))
                problem = _sweep_problem(manifest)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RecursionError) as exc:
                problem = f"unreadable ({exc})"
            if problem:
                print(_shown(f"warning: skipping sweep file {self._name(path)}: {problem}"), file=sys.stderr)
                continue
            manifest.setdefault("record", _basename(path).removesuffix(".json"))
            out.append(manifest)
        return sorted(out, key=lambda m: (str(m.get("started_at", "")), str(m.get("run_id", "")),
                                          str(m.get("record", ""))))

    def compact(self) -> int:
        """Fold single-cell files into one part file, so large stores read fast. Returns files folded.

        Safe beside other writers and other compactions: the part file holds exactly the
        files that were read (the newest record of each cell among them) and is in place
        before those files, and only those, are removed. A file written meanwhile is not in
        the fold and stays; a file that cannot be read stays too (named, never deleted). A
        kill or a racing compaction can leave a record in two files; the reader keeps one.
        """
        singles = [p for p in self._fs.list(CELLS) if not _basename(p).startswith("part-")]
        if len(singles) < 2:
            return 0
        tables, folded = [], []
        for path in singles:
            try:
                tables.append(self._fs.read_table(path))
                folded.append(path)
            except FileNotFoundError:  # folded by another compaction meanwhile
                continue
            except Exception as exc:  # noqa: BLE001 - a corrupted file stays where it is, named
                print(_shown(f"warning: not compacting unreadable result file {self._name(path)}: {exc}"),
                      file=sys.stderr)
        if len(folded) < 2:
            return 0
        merged, source = _combine(tables)
        merged = merged[_newest_records(merged, source)].reset_index(drop=True)
        digest = hashlib.sha1("".join(_basename(p) for p in folded).encode()).hexdigest()[:12]
        self._fs.write(self._fs.path(CELLS, f"part-{digest}.parquet"), _parquet_bytes(merged))
        checkpoint("store.compact.part_written")
        for path in folded:
            self._fs.delete(path)
        return len(folded)

    # -- reading --------------------------------------------------------------------------
    def files(self, table: str = CELLS) -> list[Path] | list[str]:
        return self._fs.list(table)

    def _read(self, files: Iterable[Any], warn: bool = True,
              required: str | None = None) -> tuple[list[pa.Table], list[Any], bool]:
        """Read ``files``: (tables, unreadable files, whether some file vanished meanwhile). A file
        without the ``required`` column is no table of this store's (foreign parquet): unreadable."""
        frames, bad, vanished = [], [], False
        for path in files:
            try:
                frame = self._fs.read_table(path)
                if required and required not in frame.column_names:
                    raise ValueError(f"not a suite result file (no '{required}' column)")
                frames.append(frame)
            except FileNotFoundError:  # removed by a compaction after it was listed
                vanished = True
            except Exception as exc:  # a corrupted or foreign file must not hide the rest of the store
                bad.append(self._name(path))
                self._quarantine(path, exc, warn)
        return frames, bad, vanished

    def _quarantine(self, path: Any, reason: Exception, warn: bool) -> None:
        """Move an unreadable file out of the tables into ``quarantine/``, and name it; never delete it."""
        try:
            moved = self._fs.move(path, QUARANTINE)
            where = f"moved to {self._name(moved)}"
        except FileNotFoundError:
            return  # gone meanwhile (compacted or quarantined by another reader)
        except OSError as exc:  # a read-only store: leave the file where it is
            where = f"left in place ({exc})"
        print(_shown(f"warning: unreadable result file {self._name(path)} ({type(reason).__name__}: {reason}); "
                     f"{where}"), file=sys.stderr)

    def clean_stale_temporaries(self) -> list[str]:
        """Remove temporary files a killed writer left behind (local stores; a live writer's stay).

        A temporary file is named ``.<file>.<pid>.<random>.tmp``; it is stale when no process
        with that pid runs on this machine. Readers never see temporary files either way.
        """
        if not isinstance(self._fs, _LocalFiles) or not self._fs.root.is_dir():
            return []
        removed = []
        for tmp in self._fs.root.rglob(".*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(str(tmp))
        return removed

    def check_writable(self) -> None:
        """Fail before any training when the store cannot be written (read-only, a file, no space)."""
        probe = self._fs.path(f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            self._fs.write(probe, b"suite")
            self._fs.delete(probe)
        except OSError as exc:
            raise UserError(f"cannot write to the result store {self.uri}: {exc.strerror or exc}. Choose a "
                            f"writable --store (and check free space)") from None

    def _by_cell(self, table: str, cell_ids: Iterable[str] | None) -> list[Any]:
        if cell_ids is None:
            return self._fs.list(table)
        paths = [self._fs.path(table, f"{c}.parquet") for c in cell_ids]
        return [p for p in paths if self._fs.exists(p)]

    def load(self, table: str = CELLS, warn: bool = True, skipped: list[Path] | None = None) -> pd.DataFrame:
        """One table as a DataFrame; unreadable files are warned about and appended to ``skipped``.

        For cells, one record per cell: its newest attempt. A file that vanished between
        listing and reading was folded into a part file by a compaction; the table is listed
        and read again, so a reader racing a compaction never misses a cell.
        """
        for _ in range(_READ_TRIES):
            required = "cell_id" if table in (CELLS, PREDICTIONS, CURVES) else None
            frames, bad, vanished = self._read(self.files(table), warn=warn, required=required)
            if not vanished:
                break
        if skipped is not None:
            skipped.extend(bad)
        frames = [f for f in frames if f.num_rows]
        if not frames:
            return pd.DataFrame(columns=COLUMNS if table == CELLS else None)
        frame, source = _combine(frames)
        if table == CELLS and "cell_id" in frame:
            # One record per cell: the newest attempt (a --force re-run, a second driver), from
            # one file (a half-done compaction leaves a record in two).
            frame = frame[_newest_records(frame, source)].reset_index(drop=True)
        return frame

    def ok_cell_ids(self) -> set[str]:
        frame = self.load(warn=False)
        if frame.empty:
            return set()
        return set(frame.loc[frame["status"] == STATUS_OK, "cell_id"].unique())

    def cell_records(self, cell_id: str) -> pd.DataFrame:
        """Every record of one cell still in its own files (not yet compacted), all attempts."""
        files = [p for p in self._fs.list(CELLS) if _basename(p).startswith(f"{cell_id}.")]
        tables, _, _ = self._read(files, warn=False)
        return _combine(tables)[0] if tables else pd.DataFrame(columns=COLUMNS)

    def load_predictions(self, cell_ids: Iterable[str] | None = None,
                         skipped: list[Path] | None = None) -> pd.DataFrame:
        tables, bad, _ = self._read(self._by_cell(PREDICTIONS, cell_ids))
        if skipped is not None:
            skipped.extend(bad)
        return _combine(tables)[0] if tables else pd.DataFrame()


def _sweep_problem(manifest: Any) -> str:
    """Why ``manifest`` is no sweep record ("" when it is one): ``suite status`` reads its cells
    and their ids, so a foreign JSON file must stop here."""
    if not isinstance(manifest, dict):
        return f"not a sweep record (a JSON {type(manifest).__name__}, not an object)"
    cells = manifest.get("cells")
    if not isinstance(cells, list):
        return "not a sweep record (no list of cells)"
    for n, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_id"), str) or not cell["cell_id"]:
            return f"not a sweep record (cell {n} has no cell_id)"
    return ""


def _basename(path: Any) -> str:
    return path.name if isinstance(path, Path) else str(path).rsplit("/", 1)[-1]


def load(path: str | os.PathLike, table: str = CELLS) -> pd.DataFrame:
    """Read a result store into a long-form DataFrame (one row per cell per metric)."""
    store = ResultStore(path)
    if not store.exists():
        raise UserError(f"no result store at '{store.root}': run 'suite run ... --store {store.root}' first")
    return store.load(table)
