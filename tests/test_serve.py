"""`lincir serve`: the JSON API's answers and refusals (Flask's test client), and the page
itself driven by headless Chromium (Debian's chromium + chromium-driver; `make test`
installs them where it can)."""
import io
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import search_world
from PIL import Image

from pipeline.tools.cli import main
from pipeline.tools.search import serve
from pipeline.tools.search.serve import create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def client(photo_index):
    return create_app(photo_index["searcher"], max_upload_mb=0.05).test_client()


def png_bytes(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).save(out, "PNG")
    return out.getvalue()


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and b"Composed image search" in page.data and b"<script>" in page.data
    assert b"http" not in page.data.replace(b"http-equiv", b"")  # nothing from a CDN: it works offline
    info = client.get("/api/info").get_json()
    assert info["images"] == 60 and info["index"] == "flat" and info["backbone"] == "lincir-world-vit"


def test_search_by_index_entry_and_by_upload(client, photo_index):
    ref, condition, truths = next(search_world.queries())
    body = client.post("/api/search", data={"ref": ref, "text": condition, "k": "5"}).get_json()
    assert body["mode"] == "composed" and {r["path"] for r in body["results"][:2]} == truths
    assert body["results"][0]["thumb"] == f"/api/thumb/{body['results'][0]['path']}"  # nothing to encode here
    upload = {"image": (io.BytesIO(png_bytes(photo_index["photos"] / ref)), "mine.png"), "text": condition, "k": "5"}
    uploaded = client.post("/api/search", data=upload, content_type="multipart/form-data").get_json()
    assert {r["path"] for r in uploaded["results"][:2]} == truths
    text_only = client.post("/api/search", data={"text": "is red"}).get_json()
    assert text_only["mode"] == "text" and len(text_only["results"]) == 20


def test_thumbnails_only_of_index_entries(client, photo_index):
    ok = client.get("/api/thumb/" + search_world.thing_path("star", "red", 0))
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(ok.data)).size == (64, 64)  # never enlarged
    for path, status in [("nope.png", 404), ("../photos.index/index.json", 400), ("star/../../backbone/aligned.pt", 400),
                         ("%2e%2e/%2e%2e/etc/passwd", 400), ("/etc/passwd", 404), ("star", 404)]:
        response = client.get("/api/thumb/" + path)
        assert response.status_code == status and "error" in response.get_json(), path


@pytest.mark.parametrize("data, status, message", [
    ({"ref": "nope.png", "text": "is red"}, 404, "not an entry of the index"),
    ({"ref": "../../etc/passwd", "text": "is red"}, 400, "not a path inside the index"),
    ({"text": "is red", "k": "many"}, 400, "k must be a whole number"),
    ({"text": "is red", "k": "100000"}, 400, "k must be between 1 and 200"),
    ({"text": "   "}, 400, "needs a reference image, a condition text, or both"),
    ({"text": "x" * 1001}, 400, "longer than 1000 characters"),
])
def test_bad_queries_are_4xx_with_a_message(client, data, status, message):
    response = client.post("/api/search", data=data)
    assert response.status_code == status and message in response.get_json()["error"]


def test_uploads_that_are_not_images_or_too_large(client, photo_index):
    not_image = {"image": (io.BytesIO(b"%PDF-1.4 not an image"), "cat.png"), "text": "is red"}
    response = client.post("/api/search", data=not_image, content_type="multipart/form-data")
    assert response.status_code == 415 and "not an image" in response.get_json()["error"]
    big = {"image": (io.BytesIO(os.urandom(80_000)), "big.png"), "text": "is red"}  # over the 0.05 MB limit
    response = client.post("/api/search", data=big, content_type="multipart/form-data")
    assert response.status_code == 413 and "larger than 0.05 MB" in response.get_json()["error"]
    both = {"image": (io.BytesIO(png_bytes(photo_index["photos"] / search_world.thing_path("star", "red", 0))), "a.png"),
            "ref": search_world.thing_path("star", "red", 0)}
    assert client.post("/api/search", data=both, content_type="multipart/form-data").status_code == 400


ODD_NAMES = ["what?.png", "no#1.png", "100%25.png", "two\nlines.png", "a b/c+d.png"]


@pytest.fixture(scope="module")
def odd_index(photo_index, tmp_path_factory):
    """An index of files whose names a URL must encode, each a picture of another colour."""
    from pipeline.tools.search import index
    from pipeline.tools.search.query import open_index

    folder = tmp_path_factory.mktemp("odd") / "photos"
    for name, colour in zip(ODD_NAMES, ["red", "green", "blue", "yellow", "purple"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo_index["photos"] / search_world.thing_path("star", colour, 0), folder / name)
    index.update(folder, folder.parent / "odd.index", backbone_file=photo_index["backbone"], phi=photo_index["phi"],
                 kind="flat")
    return folder, open_index(folder.parent / "odd.index")


def test_thumbnails_of_names_with_url_characters_are_their_own_files(odd_index):
    folder, searcher = odd_index
    client = create_app(searcher).test_client()
    results = client.post("/api/search", data={"text": "is red", "k": "5"}).get_json()["results"]
    assert sorted(r["path"] for r in results) == sorted(ODD_NAMES)
    for r in results:
        response = client.get(r["thumb"])
        assert response.status_code == 200, r
        expected = io.BytesIO()
        with Image.open(folder / r["path"]) as image:
            image.thumbnail((serve.THUMB, serve.THUMB))
            image.convert("RGB").save(expected, "JPEG", quality=85)
        assert response.data == expected.getvalue(), r["path"]  # this file's picture, not another's


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width x height: what a decompression bomb looks like before decoding."""
    real = io.BytesIO()
    Image.new("L", (1, 1)).save(real, "PNG")
    data = bytearray(real.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_an_upload_is_refused_by_its_pixel_count_before_any_decoding(photo_index, monkeypatch):
    decoded = []
    monkeypatch.setattr(serve, "search", lambda *a, **k: decoded.append(a) or ("image", []))
    client = create_app(photo_index["searcher"], max_upload_megapixels=0.005).test_client()
    for data, size in [(png_claiming(9_000, 9_000), "9000 x 9000"), (png_claiming(100_000, 100_000), "")]:
        upload = {"image": (io.BytesIO(data), "tiny.png"), "text": "is red"}
        response = client.post("/api/search", data=upload, content_type="multipart/form-data")
        assert len(data) < 100 and response.status_code == 413
        assert "more pixels than the 0.005 megapixels" in response.get_json()["error"] and size in response.get_json()["error"]
    ok = {"image": (io.BytesIO(png_bytes(photo_index["photos"] / search_world.thing_path("star", "red", 0))), "a.png")}
    assert client.post("/api/search", data=ok, content_type="multipart/form-data").status_code == 200  # 64 x 64
    assert len(decoded) == 1


def test_at_most_decodes_uploads_are_decoded_at_once(photo_index, monkeypatch):
    active, peak, lock = [0], [0], threading.Lock()

    def slow_search(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return "image", []

    monkeypatch.setattr(serve, "search", slow_search)
    app = create_app(photo_index["searcher"])
    data = png_bytes(photo_index["photos"] / search_world.thing_path("star", "red", 0))
    codes = []

    def upload():
        response = app.test_client().post("/api/search", data={"image": (io.BytesIO(data), "a.png")},
                                          content_type="multipart/form-data")
        codes.append(response.status_code)

    threads = [threading.Thread(target=upload) for _ in range(3 * serve.DECODES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * len(threads) and peak[0] == serve.DECODES


@pytest.mark.parametrize("argv, expected", [
    (["--port", "99999"], "argument --port: must be at most 65535, not 99999"),
    (["--port", "-1"], "argument --port: must be at least 0, not -1"),
    (["--max-upload-mb", "-1"], "argument --max-upload-mb: must be above 0, not -1"),
    (["--max-upload-mb", "nan"], "argument --max-upload-mb: must be a finite number"),
    (["--max-upload-megapixels", "0"], "argument --max-upload-megapixels: must be above 0, not 0"),
])
def test_serve_arguments_are_range_checked(photo_index, capsys, monkeypatch, argv, expected):
    monkeypatch.setattr(serve, "serve", lambda *a, **k: pytest.fail("a bad argument reached the server"))
    with pytest.raises(SystemExit) as done:
        main(["serve", "--index", str(photo_index["index"]), *argv])
    err = capsys.readouterr().err
    assert done.value.code == 1 and err.startswith("error: lincir serve: ") and expected in err and err.count("\n") == 1


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/api/nothing").status_code == 404 and "error" in client.get("/api/nothing").get_json()
    assert client.get("/api/search").status_code == 405
    listed = client.get("/api/images?q=star/&limit=3").get_json()["images"]
    assert len(listed) == 3 and all(p.startswith("star/") for p in listed)
    assert client.get("/api/images?limit=-1").status_code == 400


@pytest.fixture
def served(photo_index):
    from pipeline.tools.search.serve import make

    server = make(photo_index["searcher"], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


LAYOUT = """
const box = (selector) => document.querySelector(selector).getBoundingClientRect();
const middle = (r) => (r.top + r.bottom) / 2;
const [image, text, textLabel, preview, go] = [box("#image"), box("#text"), box("label[for=text]"), box("#preview"),
                                               box("#go")];
return {labelsAligned: Math.abs(textLabel.left - box("label[for=image]").left) < 1,
        conditionBesideItsLabel: Math.abs(middle(text) - middle(textLabel)) < 4 && text.left > textLabel.right,
        inputsAligned: Math.abs(text.left - image.left) < 1 && Math.abs(go.left - image.left) < 1,
        previewShown: !document.querySelector("#preview").hidden && preview.width > 0,
        previewInColumn: Math.abs(preview.left - image.left) < 1 && preview.bottom <= textLabel.top};
"""


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (`make test` installs them as root)")
def test_the_page_in_headless_chromium(served, photo_index, tmp_path, monkeypatch):
    """The page in each of its states (empty, text only, image only, composed): the form keeps its two
    columns in all of them, and each search shows its mode and results. LINCIR_SCREENSHOTS=<folder>
    keeps a screenshot of each state there (docs/serve*.png)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 20)
    element = lambda name: driver.find_element(By.ID, name)  # noqa: E731

    def type_into(name: str, text: str) -> None:
        element(name).clear()
        element(name).send_keys(text)

    def searched(mode: str, n: int) -> list:
        element("go").click()
        wait.until(lambda d: element("mode").text == f"{mode} search: {n} results")
        wait.until(lambda d: d.execute_script(  # every thumbnail loaded
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        assert element("error").text == ""
        return driver.execute_script("return [...document.querySelectorAll('#results figure')].map(f => f.dataset.path)")

    def screenshot(name: str) -> None:
        shot = tmp_path / name
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 500
        if os.environ.get("LINCIR_SCREENSHOTS"):  # where to keep a copy, e.g. docs/
            shutil.copy(shot, Path(os.environ["LINCIR_SCREENSHOTS"]) / name)

    try:
        driver.get(served)
        wait.until(lambda d: "60 images" in element("info").text)
        layout = driver.execute_script(LAYOUT)  # empty: no reference, so no preview
        assert layout["labelsAligned"] and layout["conditionBesideItsLabel"] and layout["inputsAligned"]
        assert not layout["previewShown"]
        screenshot("serve-empty.png")
        element("go").click()
        wait.until(lambda d: "needs a reference image, a condition text, or both" in element("error").text)

        type_into("text", "is red")  # text only
        type_into("k", "8")
        paths = searched("text", 8)
        assert len(paths) == 8 and all(p.split("/")[1].startswith("red") for p in paths[:2])
        layout = driver.execute_script(LAYOUT)
        assert layout["labelsAligned"] and layout["conditionBesideItsLabel"] and not layout["previewShown"]
        screenshot("serve-text.png")

        pick = search_world.thing_path("cross", "green", 0)  # image only: a reference from the index
        element("ref").send_keys(pick + Keys.TAB)  # its change event shows the preview
        element("text").clear()
        wait.until(lambda d: d.execute_script("const p = document.querySelector('#preview'); "
                                              "return !p.hidden && p.complete && p.naturalWidth > 0"))
        paths = searched("image", 8)
        assert pick not in paths and paths[0] == search_world.thing_path("cross", "green", 1)  # its twin render
        layout = driver.execute_script(LAYOUT)
        assert layout["labelsAligned"] and layout["conditionBesideItsLabel"] and layout["inputsAligned"]
        assert layout["previewShown"] and layout["previewInColumn"]
        screenshot("serve-image.png")

        ref, condition, truths = next(search_world.queries())  # composed: an upload and a condition
        upload = tmp_path / "my reference.png"
        shutil.copy(photo_index["photos"] / ref, upload)
        element("image").send_keys(str(upload))  # its change event clears the entry typed above
        assert element("ref").get_attribute("value") == ""
        type_into("text", condition)
        paths = searched("composed", 8)
        assert set(paths[:2]) == truths
        layout = driver.execute_script(LAYOUT)
        assert layout["labelsAligned"] and layout["conditionBesideItsLabel"] and layout["previewInColumn"]
        screenshot("serve.png")

        # the other way to give a reference with a condition: an entry of the index, typed (or picked from the list)
        pick, condition, truths = list(search_world.queries())[7]
        element("ref").send_keys(pick + Keys.TAB)  # the change event clears the upload
        type_into("text", condition)
        element("go").click()
        wait.until(lambda d: set(d.execute_script(  # read in one go: the page replaces the figures
            "return [...document.querySelectorAll('#results figure')].slice(0, 2).map(f => f.dataset.path)")) == truths)
        assert element("error").text == ""
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results figure")))
    finally:
        driver.quit()
