"""Small file helpers shared by every stage: atomic writes and readable input errors."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

log = logging.getLogger(__name__)


class InputError(RuntimeError):
    """Bad user input: the message names the file and the problem; the CLI prints it on one line."""


# --------------------------------------------------------------------- identifiers
# Video, clip and frame_dir ids become file names and HDF5 group names; every reader of a label
# table, a pickle or a manifest checks them here (and keeps them as text: see read_csv_table).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def id_problem(text: str) -> str | None:
    """Why `text` cannot be used as an id inside a path or an HDF5 group name, or None."""
    if text in ("", ".", ".."):
        return f"{text!r} cannot be used as an id"
    if "/" in text or "\\" in text:
        return f"{text!r} contains a path separator"
    if _CONTROL.search(text):
        return f"{text!r} contains a control character"
    return None


class ComputationError(RuntimeError):
    """The input was valid but the computation went wrong (a training whose loss became NaN or
    infinite: a setting, usually the learning rate, is too high); the CLI prints it on one line
    and exits 3, so that it is not mistaken for bad input (2) or a failed write (1)."""


class OutputError(RuntimeError):
    """An output could not be written (disk full, read-only folder, no permission): the message
    names the output and the cause; the CLI prints it on one line."""


# --------------------------------------------------------------------- temporary outputs
# A temporary output is named .<name>.<host>-<pid>-<start>-<random><suffix>: the machine, the
# process id and the process start time (Linux clock ticks since boot, 0 elsewhere) of its
# writer. A killed stage leaves its temporary behind; the next writer of the same output
# removes it once that process is gone. The start time tells a reused pid from the writer.
_TOKEN = r"[a-z0-9_]{8}"  # tempfile's random part
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


_PROC = os.path.isdir("/proc/self")  # Linux; elsewhere the pid alone decides


def _start_time(pid: int) -> int | None:
    """Start time of process `pid` (clock ticks since boot); None if there is no such process,
    0 where /proc does not say (the pid alone then decides)."""
    stat = None
    if _PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            pass
    if stat is not None:
        # Fields after the command name, which may hold spaces and parentheses: state is 3rd,
        # starttime the 22nd field of the line.
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):  # killed and not yet reaped: it writes nothing any more
            return None
        return int(fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def _temp_prefix(path: Path) -> str:
    pid = os.getpid()
    return f".{path.name}.{_HOST}-{pid}-{_start_time(pid) or 0}-"


def _temp_pattern(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}\.([0-9a-f]{{8}})-(\d+)-(\d+)-{_TOKEN}.*")


def stale_temporaries(path) -> list[Path]:
    """Temporary files of output `path` whose writer (on this machine) no longer runs."""
    path = Path(path)
    pattern = _temp_pattern(path)
    stale = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if not m or m.group(1) != _HOST:
            continue  # not ours, or written on another machine (its process cannot be checked here)
        pid, start = int(m.group(2)), int(m.group(3))
        now = _start_time(pid)
        if now is None or (start and now and now != start):
            stale.append(path.parent / name)
    return sorted(stale)


def remove_stale_temporaries(path) -> list[Path]:
    """Delete what stale_temporaries finds (each is logged); return the removed paths."""
    removed = []
    for tmp in stale_temporaries(path):
        try:
            size = tmp.stat().st_size
            tmp.unlink()
        except FileNotFoundError:
            continue  # another writer removed it first
        log.warning("removed %s (%.1f MB), the temporary output of a killed run", tmp, size / 1e6)
        removed.append(tmp)
    return removed


# --------------------------------------------------------------------- write errors
# errno values that only a write gives, whatever file the failing call named (a permission or
# I/O error may come from reading an input: those count only when they name the temporary).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def os_error_cause(error: BaseException) -> tuple[int | None, str]:
    """(errno, one-line cause) of an OSError, h5py's long messages included: h5py puts the
    system's reason inside the text ("... errno = 28, error message = 'No space left on
    device' ...") and often leaves .errno unset."""
    text = str(error)
    found_errno = getattr(error, "errno", None)
    found = re.search(r"errno = (\d+)", text)
    if found_errno is None and found:
        found_errno = int(found.group(1))
    reason = re.search(r"error message = '([^']*)'", text)
    if reason:
        cause = reason.group(1)
    elif getattr(error, "strerror", None):
        cause = error.strerror
    elif found_errno is not None:
        cause = os.strerror(found_errno)
    else:
        cause = next((line.strip() for line in text.splitlines() if line.strip()),
                     type(error).__name__)
    return found_errno, cause[:300]


def describe_os_error(error: OSError) -> str:
    """'<file>: <reason>' for any OSError (h5py's name the file inside their text)."""
    _, cause = os_error_cause(error)
    name = getattr(error, "filename", None)
    if name is None:
        found = re.search(r"\b(?:file)?name = '([^']*)'", str(error))
        name = found.group(1) if found else None
    return f"{name}: {cause}" if name is not None else cause


def _is_write_error(error: Exception, tmp: Path) -> bool:
    """Did this error come from writing the temporary? (a RuntimeError only when its text
    names the temporary or a write errno, as h5py's do)"""
    number, _ = os_error_cause(error)
    if not isinstance(error, OSError):
        number = number if re.search(r"errno = \d+", str(error)) else None
    names = {str(getattr(error, "filename", None)), str(getattr(error, "filename2", None))}
    return number in _WRITE_ERRNOS or str(tmp) in names or tmp.name in str(error)


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def replaceable_problem(path) -> str | None:
    """Why an output may not be written at `path`, or None: an output replaces only a regular
    file (or takes a free name). A device node, FIFO, socket, directory or symbolic link there is
    not ours: renaming a file onto it would replace it (as root, `--out /dev/null` would replace
    the system's /dev/null; a link's target would be left stale and the link lost)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be checked ({os_error_cause(e)[1]})"
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return f"is {kind}; an output replaces only a regular file: give the output another path"


def check_replaceable(path) -> None:
    problem = replaceable_problem(path)
    if problem:
        raise InputError(f"{path}: refusing to write the output: it {problem}")


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A killed or failed stage therefore never leaves a half-written output behind, and the
    temporaries of killed earlier runs of this output are removed first. An OSError while
    writing (disk full, read-only folder, no permission) becomes an OutputError naming `path`.
    Only a regular file is replaced: anything else at `path` (a device, FIFO, directory or
    symbolic link) is an InputError before anything is written (check_replaceable).
    """
    path = Path(path)
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix or path.suffix,
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot create the output ({os_error_cause(e)[1]})") from None
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp
        check_replaceable(path)   # (again: something may have taken the name meanwhile)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # h5py raises RuntimeError for some failed writes
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (InputError, OutputError)) and _is_write_error(e, tmp):
            raise OutputError(f"{path}: cannot write the output ({os_error_cause(e)[1]})") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def h5_create(path):
    """A new HDF5 file for writing whose write errors surface where they happen.

    With HDF5's default buffers (the sieve buffer of contiguous datasets, the chunk cache) a
    write is often deferred to when a dataset object is freed; if it fails then (disk full),
    h5py can only print the error ("Exception ignored in ... __dealloc__", dozens of lines), the
    stage goes on writing into a broken file, and closing it crashes the interpreter. Without
    those buffers every write goes to the file at once and a failure is an OSError at the call,
    which atomic_path reports in one line. The stages write whole datasets or whole frames at
    a time, so the buffers save nothing (the frame store is written no slower without them).
    """
    import h5py

    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # as h5py.File's
    fapl.set_sieve_buf_size(0)
    fapl.set_cache(0, 0, 0, 0.75)  # (metadata elements: unused, chunk slots, chunk bytes, w0)
    fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl)
    return h5py.File(fid)


@contextlib.contextmanager
def atomic_h5(path):
    """`with atomic_h5(out) as h5:` a new HDF5 file (h5_create) that becomes `path` only if the
    block succeeds (atomic_path)."""
    with atomic_path(path) as tmp, h5_create(tmp) as h5:
        yield h5


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    # sort_keys + fixed indent: equal content gives byte-identical files (determinism checks).
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_regular_file(path, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of `path` if it is a regular file (a link to one included) of at most
    `max_bytes`; InputError naming it otherwise. A name linked to /dev/zero, a FIFO or a device
    would otherwise be read without end (or wait for a writer). FileNotFoundError passes through
    (callers decide whether a missing file is an error)."""
    path = Path(path)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: {what} is not a regular file (a device, FIFO or socket, "
                             "or a link to one)")
        if max_bytes is not None and info.st_size > max_bytes:
            raise InputError(f"{path}: {what} has {info.st_size} bytes, more than the "
                             f"{max_bytes} such a file can plausibly hold")
        data = f.read(info.st_size + 1)   # (read(n) allocates n bytes first: n is the checked size)
    if len(data) > info.st_size:
        raise InputError(f"{path}: {what} grew while being read (is it still being written?)")
    return data


def read_csv_table(path, text_columns=(), what: str = "table"):
    """A CSV that a stage wrote or a user gives (manifest, class table, score file) as a DataFrame
    whose `text_columns` (those present) are read as strings exactly as written: pandas' default
    would turn ids such as "NA", "null", "None", "nan" or "" into NaN, and 007 into 7. Other
    columns are read as pandas infers them (numbers, with empty cells as NaN)."""
    import pandas as pd

    path = Path(path)
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
        text = [c for c in header if c in set(text_columns)]
        frame = pd.read_csv(path, dtype={c: str for c in text}, encoding="utf-8-sig")
        if text:
            frame[text] = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False,
                                      encoding="utf-8-sig")[text]
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a readable {what} ({str(e).splitlines()[0][:160]})") from None
    return frame
