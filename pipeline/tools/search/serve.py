"""`lincir serve`: a local web page (page.html) over a small JSON API, on Flask.

    GET  /                  the page
    GET  /api/info          index size, backbone, phi
    GET  /api/images?q=&limit=   index entries whose path contains q (to pick a reference)
    GET  /api/thumb/<path>  a JPEG thumbnail of an index entry (only entries of the index)
    POST /api/search        form fields: image (an upload) or ref (an index entry), text, k
                            -> {"mode", "results": [{"path", "score", "thumb"}]}

Every error is JSON {"error": ...} with a 4xx status: 400 bad input or a path that tries to
leave the index, 404 an unknown entry, 413 an upload over --max-upload-mb or over
--max-upload-megapixels once decoded (read from its header, before any pixel is decoded), 415
an upload that is not an image. Bound to 127.0.0.1 unless --host says otherwise. The server
answers requests in threads; at most DECODES of them decode an image at once, so many uploads
at once cannot take the memory of many large pictures.
"""
from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from flask import Flask, jsonify, request, send_file
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter
from werkzeug.serving import make_server

from pipeline.core.errors import PipelineError
from pipeline.tools.search.query import Searcher, open_index, search

PAGE = Path(__file__).with_name("page.html")
THUMB = 192
MAX_K = 200
DECODES = 2  # images decoded at once, uploads and thumbnails together


class AnyPath(PathConverter):
    """Flask's `path`, newlines included: a file name may hold one."""

    regex = "(?s:[^/].*?)"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def entry(s: Searcher, path: str) -> str:
    """`path` as an index entry: relative, no `..`, and in the index's table."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path or "\x00" in path:
        raise ApiError(400, f"{path!r} is not a path inside the index")
    if path not in s.row:
        raise ApiError(404, f"{path!r} is not an entry of the index")
    return path


def uploaded_image(data: bytes, max_pixels: int) -> bytes:
    """`data`, once its header says it has at most `max_pixels` (nothing is decoded to know: a file
    of a few KB can hold a picture of hundreds of megapixels) and PIL finds its structure sound."""
    too_large = f"the upload has more pixels than the {max_pixels / 1e6:g} megapixels a reference may have: scale it down"
    not_image = "the upload is not an image PIL can read (jpg, png, webp, ...)"
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(413, f"{too_large} ({width} x {height})")
            image.verify()  # header and structure, before any model work
    except Image.DecompressionBombError:
        raise ApiError(413, too_large) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(415, not_image) from None
    return data


def thumb_url(path: str) -> str:
    """The thumbnail route of an index entry, each part of the path percent-encoded: a name with
    `?`, `#`, `%` or a newline is still its own file."""
    return "/api/thumb/" + quote(path, safe="/")


def create_app(s: Searcher, max_upload_mb: float = 10.0, max_upload_megapixels: float = 50.0) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.url_map.merge_slashes = False  # "/api/thumb//etc/passwd" reaches entry() and is refused, not redirected
    app.url_map.converters["anypath"] = AnyPath
    decoding = threading.BoundedSemaphore(DECODES)
    max_pixels = int(max_upload_megapixels * 1e6)

    @lru_cache(maxsize=1024)
    def thumbnail(path: str) -> bytes:
        try:
            with decoding, Image.open(s.root / path) as image:
                image.thumbnail((THUMB, THUMB))
                out = io.BytesIO()
                image.convert("RGB").save(out, "JPEG", quality=85)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise ApiError(404, f"{path!r} is in the index but can no longer be read from {s.root}") from None
        return out.getvalue()

    @app.get("/")
    def page():
        return send_file(PAGE, mimetype="text/html")

    @app.get("/api/info")
    def info():
        r = s.record
        return {"images": len(s.paths), "root": str(s.root), "index": r["index"], "backbone": r["backbone"]["model"],
                "phi": r["phi"]["path"]}

    @app.get("/api/images")
    def images():
        q = request.args.get("q", "").lower()
        limit = _int(request.args.get("limit", "50"), "limit", 1, 1000)
        return {"images": [p for p in s.paths if q in p.lower()][:limit]}

    @app.get("/api/thumb/<anypath:path>")
    def thumb(path):
        return send_file(io.BytesIO(thumbnail(entry(s, path))), mimetype="image/jpeg", max_age=3600)

    @app.post("/api/search")
    def query():
        upload = request.files.get("image")
        ref = request.form.get("ref") or None
        if upload and upload.filename and ref:
            raise ApiError(400, "give either an uploaded image or an index entry as the reference, not both")
        text = request.form.get("text", "")
        if len(text) > 1000:
            raise ApiError(400, "the condition is longer than 1000 characters")
        k = _int(request.form.get("k", "20"), "k", 1, MAX_K)
        if upload and upload.filename:
            with decoding:  # the upload's pixels are decoded in search()
                mode, hits = search(s, uploaded_image(upload.read(), max_pixels), text, k)
        else:
            mode, hits = search(s, entry(s, ref) if ref else None, text, k)
        return {"mode": mode, "results": [{"path": p, "score": round(c, 4), "thumb": thumb_url(p)} for p, c in hits]}

    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return jsonify(error=str(e)), e.status

    @app.errorhandler(PipelineError)
    def pipeline_error(e: PipelineError):
        return jsonify(error=str(e)), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):  # 404 of unknown routes, 405, 413 (upload too large) ...
        message = f"the upload is larger than {max_upload_mb:g} MB" if e.code == 413 else e.description
        return jsonify(error=message), e.code

    return app


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, not {value!r}") from None
    if not low <= n <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}, not {n}")
    return n


def make(s: Searcher, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 10.0,
         max_upload_megapixels: float = 50.0):
    """The HTTP server (werkzeug's, threaded) of `s`'s page; port 0 picks a free one."""
    try:
        return make_server(host, port, create_app(s, max_upload_mb, max_upload_megapixels), threaded=True)
    except OSError as e:  # taken, or not an address of this machine
        raise PipelineError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve(index: Path, phi: Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = 10.0, max_upload_megapixels: float = 50.0, device: str = "cpu") -> None:
    server = make(open_index(index, phi, device), host, port, max_upload_mb, max_upload_megapixels)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"lincir serve: bound to {host}: anyone who reaches it can search and see the indexed images",
              flush=True)
    print(f"lincir serve: http://{host}:{server.server_port}/ ({index}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
