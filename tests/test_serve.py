"""`lincir serve`: the JSON API's answers and refusals (Flask's test client), and the page
itself driven by headless Chromium (Debian's chromium + chromium-driver; `make test`
installs them where it can)."""
import io
import os
import shutil
import threading
from pathlib import Path

import pytest
import search_world
from PIL import Image

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
    assert info["images"] == 60 and info["index"] == "flat" and info["backbone"] == "lincir-world"


def test_search_by_index_entry_and_by_upload(client, photo_index):
    ref, condition, truths = next(search_world.queries())
    body = client.post("/api/search", data={"ref": ref, "text": condition, "k": "5"}).get_json()
    assert body["mode"] == "composed" and {r["path"] for r in body["results"][:2]} == truths
    assert body["results"][0]["thumb"] == f"/api/thumb/{body['results'][0]['path']}"
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


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (`make test` installs them as root)")
def test_the_page_in_headless_chromium(served, photo_index, tmp_path, monkeypatch):
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
    try:
        ref, condition, truths = next(search_world.queries())
        upload = tmp_path / "my reference.png"
        shutil.copy(photo_index["photos"] / ref, upload)
        driver.get(served)
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: "60 images" in d.find_element(By.ID, "info").text)
        driver.find_element(By.ID, "image").send_keys(str(upload))
        driver.find_element(By.ID, "text").send_keys(condition)
        k = driver.find_element(By.ID, "k")
        k.clear()
        k.send_keys("8")
        driver.find_element(By.ID, "go").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results figure")))
        figures = driver.find_elements(By.CSS_SELECTOR, "#results figure")
        assert len(figures) == 8
        assert {f.get_attribute("data-path") for f in figures[:2]} == truths
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        assert driver.find_element(By.ID, "error").text == ""
        shot = tmp_path / "serve.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 500
        if os.environ.get("LINCIR_SCREENSHOT"):  # where to keep a copy, e.g. docs/serve.png
            shutil.copy(shot, os.environ["LINCIR_SCREENSHOT"])

        # the other way to give a reference: an entry of the index, typed (or picked from the list)
        pick, condition, truths = list(search_world.queries())[7]
        driver.find_element(By.ID, "ref").send_keys(pick + Keys.TAB)  # the change event clears the upload
        text = driver.find_element(By.ID, "text")
        text.clear()
        text.send_keys(condition)
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: set(d.execute_script(  # read in one go: the page replaces the figures
            "return [...document.querySelectorAll('#results figure')].slice(0, 2).map(f => f.dataset.path)")) == truths)
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()
