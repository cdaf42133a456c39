"""attnseq serve as a real process on 127.0.0.1 (a free port), started and stopped here: its flags, the
URL line, SIGTERM/SIGINT with requests in flight (none lost, new ones 503, exit 0); and (marked browser)
the page in headless Chromium: type a date, see the translation, hover, beam controls, a phone window."""
import asyncio
import io
import signal
import sys

import numpy as np
import pytest

from attnseq.cli import main
from attnseq.data.io import read_pairs
from attnseq.run.inference import Translator
from helpers import serve_process, start_browser

EXTRA = "needs the serve extra: pip install 'attnseq[serve]'"


def needs_serve():
    pytest.importorskip("starlette", reason=EXTRA)
    pytest.importorskip("uvicorn", reason=EXTRA)


@pytest.fixture(scope="module")
def texts(tiny_data):
    return [s for s, _ in read_pairs(tiny_data / "test.tsv")[:16]]


def cli_error(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "--ckpt RUN is required (or --engine onnxruntime --model DIR)"),
    (["--model", "x"], "--model DIR is an ONNX export: add --engine onnxruntime"),
    (["--ckpt", "x", "--max-batch", "0"], "argument --max-batch: must be a positive integer, got '0'"),
    (["--ckpt", "x", "--timeout", "0"], "argument --timeout: must be a number > 0, got '0'"),
    (["--ckpt", "x", "--max-wait-ms", "soon"], "argument --max-wait-ms: must be a number >= 0"),
])
def test_flags_that_do_not_fit(argv, message, capsys):
    rc, err = cli_error(["serve", *argv], capsys)
    assert rc == 2 and err.startswith("attnseq serve: error: ") and message in err


@pytest.mark.parametrize("missing", ["starlette", "uvicorn"])
def test_a_missing_extra_is_one_line_naming_it(missing, tiny_run, monkeypatch, capsys):
    if missing == "uvicorn":
        pytest.importorskip("starlette", reason=EXTRA)                # else starlette is the one named
    monkeypatch.setitem(sys.modules, missing, None)                    # import now raises ImportError
    rc, err = cli_error(["serve", "--ckpt", str(tiny_run)], capsys)
    assert rc == 1 and err == f"attnseq serve: error: serving needs the '{missing}' package: pip install 'attnseq[serve]'\n"


def test_bad_limits_and_a_taken_port_are_one_line(tiny_run, capsys):
    needs_serve()
    rc, err = cli_error(["serve", "--ckpt", str(tiny_run), "--max-texts", "9", "--max-queue", "8"], capsys)
    assert rc == 1 and "--max-texts 9 is more than --max-queue 8" in err and err.count("\n") == 1
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err = cli_error(["serve", "--ckpt", str(tiny_run), "--port", str(port)], capsys)
    assert rc == 1 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_the_requests_in_flight_finish(tiny_run, texts, tmp_path, sig):
    httpx = pytest.importorskip("httpx", reason="needs httpx (pip install 'attnseq[test]')")
    needs_serve()
    want = [t.text for t in Translator(str(tiny_run)).translate(texts)]
    # a batch waits 30 s for company: the requests stay in flight until the signal sends them on
    args = ["--ckpt", str(tiny_run), "--max-wait-ms", "30000", "--max-batch", "1000", "--timeout", "60"]
    with serve_process(args, tmp_path / "stderr") as (p, url):
        assert url.startswith("http://127.0.0.1:")

        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                flying = [asyncio.ensure_future(c.post("v1/translate", json={"texts": [t]})) for t in texts]
                while (await c.get("healthz")).json()["queue_sentences"] < len(texts):
                    await asyncio.sleep(0.05)
                assert not any(f.done() for f in flying)
                p.send_signal(sig)
                late = None
                try:
                    while (await c.get("healthz")).status_code != 503:    # draining: new requests get 503
                        await asyncio.sleep(0.02)
                    late = await c.post("v1/translate", json={"texts": texts[:1]})
                except httpx.TransportError:  # the drained server may already have answered all and gone
                    pass                      # (the answers are checked below: none may be lost)
                return late, await asyncio.gather(*flying)
        late, answered = asyncio.run(go())
        assert p.wait(30) == 0
    assert late is None or (late.status_code == 503 and late.json()["code"] == "shutting_down")
    assert [r.status_code for r in answered] == [200] * len(texts)
    assert [r.json()["translations"][0]["text"] for r in answered] == want
    err = (tmp_path / "stderr").read_text()
    assert f"attnseq serve: stopped ({sig.name})" in err and "Traceback" not in err


# -- the page in a browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tiny_run, tmp_path_factory):
    needs_serve()
    with serve_process(["--ckpt", str(tiny_run), "--max-beam", "4"],
                       tmp_path_factory.mktemp("serve") / "stderr") as (p, url):
        yield url


@pytest.fixture(scope="module")
def browser():
    b = start_browser()
    yield b
    b.quit()


def api(url, body):
    httpx = pytest.importorskip("httpx", reason="needs httpx (pip install 'attnseq[test]')")
    return httpx.post(url + "v1/translate", json=body, timeout=30).json()["translations"]


def open_page(browser, url):
    from selenium.webdriver.common.by import By
    browser.get(url)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"


def type_and_wait(browser, text, want):
    """Type ``text`` in the box; wait until the page shows ``want`` as the first output."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    WebDriverWait(browser, 30).until(
        lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, "#outputs li .out")] == [want])


@pytest.mark.browser
def test_type_a_date_see_the_translation_and_hover(browser, live, texts):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    text = texts[3]
    found, = api(live, {"texts": [text], "attention": True})
    open_page(browser, live)
    type_and_wait(browser, text, found["text"])
    h = found["nbest"][0]
    w = np.array(h["attention"])
    out_tokens = browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")
    assert len(out_tokens) == len(h["tokens"]) and len(browser.find_elements(By.CSS_SELECTOR, "#heatmap .cell")) == w.size
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#detail .tok .p")] == [f"{p:.3f}" for p in h["probs"]]
    for t in range(len(h["tokens"])):
        ActionChains(browser).move_to_element(out_tokens[t]).perform()
        lit = [int(e.get_attribute("data-s")) for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .src-tok.hl")]
        assert lit == [s for s in range(w.shape[1]) if w[t, s] >= 0.1], t
        best = browser.find_element(By.CSS_SELECTOR, "#heatmap .src-tok.hl-max")
        assert int(best.get_attribute("data-s")) == int(w[t].argmax())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.browser
def test_beam_and_n_best_controls(browser, live, texts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    text = texts[5]
    found, = api(live, {"texts": [text], "beam": 3, "n_best": 3, "attention": True})
    open_page(browser, live)
    for name, value in (("beam", "3"), ("nbest-n", "3")):
        box = browser.find_element(By.ID, name)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value)                                            # as a user would: select, type
    type_and_wait(browser, text, found["text"])
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#nbest tr.hyp")) == len(found["nbest"]))
    rows = browser.find_elements(By.CSS_SELECTOR, "#nbest tr.hyp")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == [h["text"] for h in found["nbest"]]
    rows[1].click()
    assert browser.find_element(By.ID, "detail").get_attribute("data-hyp") == "1"
    shown = browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")
    assert len(shown) == len(found["nbest"][1]["tokens"])


@pytest.mark.browser
def test_a_phone_sized_window_and_a_screenshot(browser, live, texts, tmp_path):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By
    found = api(live, {"texts": texts[:2]})
    browser.set_window_size(390, 844)
    try:
        open_page(browser, live)
        type_and_wait(browser, texts[0], found[0]["text"])
        width = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width   # no sideways page
        for css in ("#text", "#go", "#beam", "#outputs li", "#heatmap-wrap"):
            box = browser.find_element(By.CSS_SELECTOR, css).rect
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, css
        png = browser.get_screenshot_as_png()
    finally:
        browser.set_window_size(1300, 850)
    (tmp_path / "phone.png").write_bytes(png)
    pixels = imread(io.BytesIO(png))[..., :3]
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50   # not blank: text, heatmap
