"""Matbench download: loopback HTTP server only, everything bounded by timeouts."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tui_ft.core.data.dataset import load_matbench
from tui_ft.core.data.fetch import FetchError, fetch_matbench, known_matbench_names, matbench_source

TIMEOUT = 5.0


def _tiny_matbench() -> bytes:
    from pymatgen.core import Lattice, Structure

    rows, ids = [], []
    for k, (a, b, latt) in enumerate(
        [("Na", "Cl", 5.6), ("Mg", "O", 4.2), ("K", "Br", 6.6), ("Ca", "S", 5.7), ("Li", "F", 4.0), ("Cs", "I", 4.6)]
    ):
        if b == "I":  # CsCl type
            s = Structure(Lattice.cubic(latt), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        else:  # rocksalt conventional cell
            s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(latt), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        ids.append(f"mb-test-{k}")
        rows.append([s.as_dict(), -1.0 - 0.25 * k])
    obj = {"index": ids, "columns": ["structure", "e_form"], "data": rows}
    return gzip.compress(json.dumps(obj).encode(), mtime=0)


class _Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in outer.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = TIMEOUT
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=TIMEOUT)


@pytest.fixture
def server(monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = _Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def payload() -> tuple[bytes, str]:
    blob = _tiny_matbench()
    return blob, hashlib.sha256(blob).hexdigest()


def test_download_then_cache(server, payload, tmp_path):
    blob, digest = payload
    server.files["/x.json.gz"] = blob
    seen = []
    dest = tmp_path / "data"
    path = fetch_matbench(
        url=server.url("/x.json.gz"), sha256=digest, dest_dir=dest, progress=lambda d, t: seen.append((d, t)),
        timeout=TIMEOUT,
    )
    assert path == dest / "matbench_mp_e_form.json.gz"
    assert path.read_bytes() == blob
    assert seen and seen[-1] == (len(blob), len(blob))
    assert [p.name for p in dest.iterdir()] == [path.name]  # no temp files left
    ds = load_matbench(path, "e_form")
    assert len(ds) == 6 and not ds.bad_rows and ds.ids[0] == "mb-test-0"

    assert len(server.requests) == 1
    again = fetch_matbench(url=server.url("/x.json.gz"), sha256=digest, dest_dir=dest, timeout=TIMEOUT)
    assert again == path and len(server.requests) == 1  # cached: the server was not asked again


def test_stale_file_is_replaced(server, payload, tmp_path):
    blob, digest = payload
    server.files["/x.json.gz"] = blob
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "matbench_mp_e_form.json.gz").write_bytes(b"old and wrong")
    path = fetch_matbench(url=server.url("/x.json.gz"), sha256=digest, dest_dir=dest, timeout=TIMEOUT)
    assert path.read_bytes() == blob and len(server.requests) == 1


def test_wrong_hash_leaves_nothing(server, payload, tmp_path):
    blob, _digest = payload
    server.files["/x.json.gz"] = blob
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="sha256"):
        fetch_matbench(url=server.url("/x.json.gz"), sha256="0" * 64, dest_dir=dest, timeout=TIMEOUT)
    assert not (dest / "matbench_mp_e_form.json.gz").exists()
    assert list(dest.iterdir()) == []


def test_http_404(server, payload, tmp_path):
    _blob, digest = payload
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        fetch_matbench(url=server.url("/missing.json.gz"), sha256=digest, dest_dir=dest, timeout=TIMEOUT)
    msg = str(info.value)
    assert "404" in msg and server.url("/missing.json.gz") in msg and "\n" not in msg
    assert list(dest.iterdir()) == []


def test_truncated_download(server, payload, tmp_path):
    blob, digest = payload
    server.files["/cut.json.gz"] = blob
    server.truncate.add("/cut.json.gz")
    dest = tmp_path / "data"
    with pytest.raises(FetchError):
        fetch_matbench(url=server.url("/cut.json.gz"), sha256=digest, dest_dir=dest, timeout=TIMEOUT)
    assert list(dest.iterdir()) == []


def test_connection_refused(tmp_path, monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = _Server()  # bind a port, then close it so nothing listens there
    url = srv.url("/x.json.gz")
    srv.close()
    with pytest.raises(FetchError, match="127.0.0.1"):
        fetch_matbench(url=url, sha256="0" * 64, dest_dir=tmp_path / "data", timeout=TIMEOUT)
    assert not (tmp_path / "data" / "matbench_mp_e_form.json.gz").exists()


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="matbench_mp_e_form"):
        fetch_matbench("matbench_nonsense", tmp_path)
    with pytest.raises(ValueError):
        fetch_matbench("../escape", tmp_path, url="http://127.0.0.1:9/x", sha256="0" * 64)


def test_matminer_metadata_no_network():
    url, digest = matbench_source("matbench_mp_e_form")
    # the pair is matminer's own entry, read here straight from the metadata file it ships
    import importlib.resources
    import json

    meta = json.loads((importlib.resources.files("matminer.datasets") / "dataset_metadata.json").read_text())
    assert (url, digest) == (meta["matbench_mp_e_form"]["url"], meta["matbench_mp_e_form"]["hash"])
    assert url.startswith("https://") and url.endswith("matbench_mp_e_form.json.gz")
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert "matbench_mp_e_form" in known_matbench_names()
