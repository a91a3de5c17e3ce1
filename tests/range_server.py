"""A loopback HTTP server with byte-range support that counts what it sends, and a COG factory
(tests of remote inputs and ``benchmarks/remote_reads.py``; not a test module)."""

from __future__ import annotations

import http.server
import re
import threading
from contextlib import contextmanager
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files in ``root``; a single ``Range: bytes=a-b`` (or ``a-``, ``-n``)
    gets a 206 with that slice, anything else the whole file. Every response is recorded in
    ``log`` as (method, range header, body bytes sent)."""

    root: Path
    log: list

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.root / self.path.split("?")[0].lstrip("/")
        if not path.is_file():
            self.send_error(404)
            self.log.append((self.command, None, 0))
            return
        size = path.stat().st_size
        header = self.headers.get("Range")
        match = _RANGE.fullmatch(header or "")
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            start = int(first) if first else max(0, size - int(last))
            end = min(int(last), size - 1) if first and last else size - 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            start, end = 0, size - 1
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.log.append((self.command, header, end - start + 1 if body else 0))
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))

    def log_message(self, *args) -> None:
        pass


class Served:
    """What the server sent: ``bytes()`` in total (or since ``mark()``), ``requests``."""

    def __init__(self, url: str, log: list) -> None:
        self.url = url
        self.log = log
        self._mark = 0

    def mark(self) -> None:
        self._mark = len(self.log)

    def bytes(self, since_mark: bool = False) -> int:
        return sum(n for _, _, n in self.log[self._mark if since_mark else 0:])

    @property
    def requests(self) -> list:
        return list(self.log)


@contextmanager
def serve(root: Path):
    """Serve ``root`` on 127.0.0.1 at a free port, in a thread; yields a :class:`Served` whose
    ``url`` is the base address (no trailing slash)."""
    log: list = []
    handler = type("Handler", (RangeHandler,), {"root": Path(root), "log": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_port}", log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_cog(path: Path, size: int, count: int, dtype: str, block: int, seed: int = 7) -> Path:
    """Write a COG of ``size`` x ``size`` noisy texture (so its bytes spread evenly over the
    scene), DEFLATE, blocks of ``block``, overviews, and an internal mask with a hole in the
    scene's middle (rows 7/16 to 8/16, columns 7/16 to 9/16). Returns ``path``."""
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    top = 255 if dtype == "uint8" else 4000
    base = (np.sin(xx / 37.0) + np.cos(yy / 23.0) + 2) / 4 * top
    mask = np.full((size, size), 255, np.uint8)
    mask[7 * size // 16: size // 2, 7 * size // 16: 9 * size // 16] = 0
    plain = path.with_name(f"plain_{path.name}")
    profile = dict(driver="GTiff", width=size, height=size, count=count, dtype=dtype, crs="EPSG:32633",
                   transform=from_origin(500000.0, 5000000.0, 10.0, 10.0), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(plain, "w", **profile) as dst:
        for b in range(1, count + 1):
            dst.write((base + rng.normal(0, top / 12, (size, size))).clip(0, top).astype(dtype), b)
        dst.write_mask(mask)
    rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=block, COMPRESS="DEFLATE")
    plain.unlink()
    return path
