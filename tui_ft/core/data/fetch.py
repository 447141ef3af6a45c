"""Download a Matbench dataset file, with the URL and SHA-256 from matminer's metadata.

``fetch_matbench("matbench_mp_e_form")`` saves ``<data>/matbench_mp_e_form.json.gz``.
The URL and hash come from matminer's dataset metadata (``get_dataset_attribute``);
the transfer itself is done here with ``urllib`` in chunks rather than with
matminer's ``_fetch_external_dataset``, because that one prints to stdout, has no
timeout, reads the whole body into memory before writing, cannot report progress
to a callback, and on a hash mismatch sleeps 60 s between retries. The file is
written to a temp file beside the destination, its hash checked, and only then
renamed into place, so a failed or partial download never leaves a file at the
final path.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from tui_ft.core.common.atomic import atomic_write
from tui_ft.core.common.paths import Paths

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "tui-ft (matbench fetch)"


class FetchError(Exception):
    """A download that failed (message: one line naming the URL and the reason)."""


def _matminer_metadata() -> dict:
    try:
        from matminer.datasets.utils import _load_dataset_dict
    except ImportError as exc:
        raise FetchError(
            f"matminer is needed for the Matbench metadata but cannot be imported ({exc}); "
            "install it with: pip install 'tui-ft[fetch]'"
        ) from None
    return _load_dataset_dict()


def known_matbench_names() -> list[str]:
    """Matbench dataset names in matminer's metadata."""
    return sorted(n for n in _matminer_metadata() if n.startswith("matbench_"))


def matbench_source(name: str) -> tuple[str, str]:
    """``(url, sha256)`` of a Matbench dataset from matminer's metadata; ``ValueError`` if unknown."""
    meta = _matminer_metadata()
    if not name.startswith("matbench_") or name not in meta:
        known = ", ".join(sorted(n for n in meta if n.startswith("matbench_")))
        raise ValueError(f"unknown Matbench dataset {name!r}; known: {known}")
    try:
        from matminer.datasets.dataset_retrieval import get_dataset_attribute

        url, digest = get_dataset_attribute(name, "url"), get_dataset_attribute(name, "hash")
    except ImportError:  # fall back to the raw metadata dict
        url, digest = meta[name]["url"], meta[name]["hash"]
    return str(url), str(digest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the whole file arrived"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def fetch_matbench(
    name: str = "matbench_mp_e_form",
    dest_dir: Path | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download ``name`` to ``<dest_dir>/<name>.json.gz`` and return that path.

    ``url`` and ``sha256`` default to matminer's metadata for ``name`` (``url``
    given without ``sha256``: the metadata hash if ``name`` is known there, else
    no hash check). A file already present whose hash matches is returned
    without downloading. ``progress(done_bytes, total_bytes)`` is called as the
    data arrives (``total_bytes`` is 0 when the server does not say).
    ``timeout`` bounds each network operation (seconds).

    Raises ``ValueError`` for an unknown dataset name and ``FetchError`` when
    the download fails (network, HTTP status, truncated body, hash mismatch).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"bad dataset name {name!r}")
    if url is None:
        url, meta_hash = matbench_source(name)
        sha256 = sha256 or meta_hash
    elif sha256 is None and name.startswith("matbench_"):
        try:
            sha256 = matbench_source(name)[1]
        except (ValueError, FetchError):
            sha256 = None
    expected = sha256.lower() if sha256 else None

    dest_dir = Path(dest_dir) if dest_dir is not None else Paths.default().data
    dest = dest_dir / f"{name}.json.gz"
    if dest.is_file() and (expected is None or _sha256(dest) == expected):
        return dest

    def download(fh) -> None:
        h = hashlib.sha256()
        done = 0
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                if progress is not None:
                    progress(0, total)
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise FetchError(f"download of {url} failed: {_reason(exc)}") from None
        if total and done != total:
            raise FetchError(f"download of {url} failed: got {done} of {total} bytes")
        got = h.hexdigest()
        if expected is not None and got != expected:
            raise FetchError(f"download of {url} failed: sha256 {got[:16]}... does not match expected {expected[:16]}...")

    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {dest_dir}: {exc}") from None
    try:
        atomic_write(dest, download)
    except OSError as exc:  # disk full, permissions while writing or renaming
        raise FetchError(f"saving {url} to {dest} failed: {exc}") from None
    return dest


__all__ = ["FetchError", "fetch_matbench", "known_matbench_names", "matbench_source"]
