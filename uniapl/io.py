"""Every file uniapl reads or writes goes through here, so a bad byte, a crash or a full disk gives one clear
message naming the file (and line), and never costs work that was saved.

- JSONL: errors name the line; bytes that are not UTF-8 are reported with their line and column; files that
  are appended to (responses, metrics, teacher outputs) get a half-written last line (a crash mid-append) cut.
- Atomic writes: a file or folder is built under a temporary sibling name and renamed into place, so readers
  see the old contents or the new ones, never half of them. Leftover staging files and folders
  (`.NAME.tmp-*`) are what a killed save leaves behind; `remove_staging_leftovers` clears them.
- Manifests: `manifest.json` lists the size and SHA-256 of each file of a saved folder, written before the
  folder is renamed into place; `verify_manifest` checks a folder against it before it is trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from uniapl.errors import DataError, IntegrityError, UniaplError, UniaplWarning

MANIFEST = "manifest.json"
STAGING_MARK = ".tmp-"  # staging files and folders are named `.{target}.tmp-XXXXXXXX`


# ---- reading ----------------------------------------------------------------------------------------


def _decode(data: bytes, path: Path, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
                        f"save the file as UTF-8") from None


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes; a missing file, a folder or an unreadable file is a DataError naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped); other bytes are a DataError naming the line."""
    path = Path(path)
    return _decode(read_bytes(path), path).removeprefix("\ufeff")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def jsonl_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(`file:line`, row) for each non-blank line, of a gzipped file too (`.jsonl.gz`, as published results are); a
    line that is not UTF-8, not JSON, or not an object is a DataError naming it."""
    path = Path(path)
    data = read_bytes(path)
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a whole gzip file ({exc})") from None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = _decode(raw, path, number).removeprefix("\ufeff" if number == 1 else "")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in jsonl_rows(path)]


def repair_last_line(path: str | Path) -> None:
    """Cut a half-written last line (one without a newline that is not a JSON object) from an appended file;
    complete it with the newline when it is whole."""
    path = Path(path)
    data = read_bytes(path)
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    try:
        whole = isinstance(json.loads(data[keep:]), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = False
    with path.open("r+b") as f:
        if whole:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(keep)
    if not whole:
        warnings.warn(f"{path}: cut a half-written last line ({len(data) - keep} bytes) left by an interrupted write",
                      UniaplWarning, stacklevel=3)


def read_resumable_jsonl(path: str | Path) -> list[dict]:
    """The rows of an append-only JSONL file after a possible crash (see `repair_last_line`); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    repair_last_line(path)
    return read_jsonl(path)


# ---- writing ----------------------------------------------------------------------------------------


def _write_error(path: Path, exc: OSError, kept: str) -> UniaplError:
    return UniaplError(f"could not write '{path}': {exc.strerror or exc}; {kept}")


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and fsync, so finished work survives a crash. Non-finite floats are written as NaN,
    Infinity and -Infinity (as Python's json reads them), never hidden as null."""
    path = Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _write_error(path, exc, "the rows written before are kept") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    if path.is_dir():
        raise UniaplError(f"'{path}' is a folder; expected a file path")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{STAGING_MARK}", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc, "its previous contents, if any, are unchanged") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_folder_atomically(target: str | Path, fill: Callable[[Path], None], manifest: bool = False,
                            keep_existing: bool = False) -> Path:
    """Build `target` through `fill(staging_folder)` and rename it into place; with `manifest`, list each file's
    checksum first. An existing target is replaced, or kept when `keep_existing` (another process built the same
    folder first). On any failure the staging folder is removed and the previous target is untouched."""
    target = Path(target)
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}", dir=target.parent))
        fill(staging)
        if manifest:
            write_manifest(staging)
        if target.exists() and keep_existing:
            return target
        if target.exists():  # move the old one aside first, so a crash leaves one of the two complete
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old{STAGING_MARK}", dir=target.parent))
            os.replace(target, old / target.name)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    except OSError as exc:
        raise _write_error(target, exc, "what was saved there before is unchanged") from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def remove_staging_leftovers(root: str | Path) -> list[Path]:
    """Delete the staging files and folders that killed writes left in `root`; returns them. Only for folders
    that one process writes at a time (a run folder), not shared ones (the model cache)."""
    root = Path(root)
    if not root.is_dir():
        return []
    leftovers = [p for p in root.iterdir() if p.name.startswith(".") and STAGING_MARK in p.name]
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return leftovers


def check_output_folder(path: str | Path, option: str) -> Path:
    """Make sure `path` is (or can become) a writable folder before hours of work go into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UniaplError(f"{option}: '{path}' is a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UniaplError(f"{option}: cannot write to the folder '{path}' ({exc.strerror or exc})") from None
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """Make sure `path` can be written as a file: not a folder, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise UniaplError(f"{option}: '{path}' is a folder; expected a file path")
    check_output_folder(path.parent, option)
    return path


# ---- manifests --------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """`folder/manifest.json`: the size and SHA-256 of every other file below `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)
    entries = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}
    with (folder / MANIFEST).open("w", encoding="utf-8") as f:
        json.dump({"files": entries}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify_manifest(folder: Path) -> None:
    """Raise IntegrityError naming the first file of `folder` that is missing, truncated or changed since its
    manifest was written."""
    path = folder / MANIFEST
    try:
        entries = read_json(path)["files"]
        if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
            raise TypeError
    except UniaplError as exc:
        raise IntegrityError(f"{exc} (the manifest that lists the folder's checksums)") from None
    except (TypeError, KeyError):
        raise IntegrityError(f"{path}: not a manifest (expected {{\"files\": {{name: {{bytes, sha256}}}}}})") from None
    for name, expected in entries.items():
        file = folder / name
        if not file.is_file():
            raise IntegrityError(f"{file}: missing (the manifest lists it)")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise IntegrityError(f"{file}: {size} bytes, but {expected.get('bytes')} were saved (truncated or overwritten)")
        if sha256_of(file) != expected.get("sha256"):
            raise IntegrityError(f"{file}: its contents changed since it was saved (SHA-256 mismatch)")
