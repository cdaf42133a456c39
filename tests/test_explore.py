"""The attention explorer: the page's embedded data against the model, its size, and (marked browser)
the page itself in headless Chromium: filters, selection, hover highlights, keys, a screenshot."""
import io
import json

import numpy as np
import pytest

from attnseq.cli import main
from attnseq.data.io import read_pairs
from attnseq.explorer import Exploration, embed_json, explore, explore_file, read_embedded, sparse_rows
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.decoding import model_step
from attnseq.run.inference import Translator
from helpers import start_browser

HL_MIN = 0.1        # the page highlights source tokens from this weight on (heatmap.html's HL_MIN)


def dense(rows, width):
    """Undo sparse_rows: thousandths, each row [first column, values ...]."""
    out = np.zeros((len(rows), width))
    for t, r in enumerate(rows):
        out[t, r[0]:r[0] + len(r) - 1] = np.array(r[1:]) / 1000
    return out


@pytest.fixture(scope="module")
def pairs(tiny_data):
    return read_pairs(tiny_data / "test.tsv")[:80]


@pytest.fixture(scope="module")
def page(tiny_run, pairs):
    return explore(str(tiny_run), [s for s, _ in pairs], [t for _, t in pairs],
                   {"parity": ["even" if len(s) % 2 == 0 else "odd" for s, _ in pairs]})


def greedy_by_hand(model, src_tok, text):
    """One source decoded step by step, independently of the batched decoders: the tokens, each one's
    probability (the largest of the softmax) and the attention (L, Ts)."""
    src = np.array([src_tok.encode(text)])
    with model.eval_mode():
        hs, state, mask = model.encode(src)
        step = model_step(model, hs, mask, log_probs=True)
        token, ids, probs, rows = np.array([model.bos_id]), [], [], []
        for _ in range(2 * src.shape[1] + 10):
            logp, state, a = step(token, state)
            token = logp.argmax(axis=1)
            ids.append(int(token[0]))
            probs.append(float(np.exp(logp[0, token[0]])))
            rows.append(np.asarray(a[0], dtype=np.float64))
            if ids[-1] == model.eos_id:
                break
    return ids, np.array(probs), np.array(rows)


# -- the data ------------------------------------------------------------------------------------
def test_embedded_data_reads_back_from_the_page(page):
    text = page.html()
    assert read_embedded(text) == page.data
    assert "__ATTNSEQ" not in text                                   # every placeholder filled


def test_embedded_outputs_probabilities_and_weights_are_the_models(tiny_run, page, pairs):
    ck = load_checkpoint(str(tiny_run))
    data = read_embedded(page.html())
    assert len(data["examples"]) == len(pairs) and data["beam"] == 1
    for (src, ref), ex in zip(pairs, data["examples"]):
        ids, probs, weights = greedy_by_hand(ck.model, ck.src_tok, src)
        h, = ex["hyps"]
        assert ex["src"] == src and ex["ref"] == ref
        assert ex["src_tokens"] == ck.src_tok.pieces(ck.src_tok.encode(src))
        assert h["tokens"] == ck.tgt_tok.pieces(ids) and h["text"] == ck.tgt_tok.decode(ids)
        assert ex["correct"] is (h["text"] == ref) is h["correct"]
        np.testing.assert_allclose(h["probs"], probs, atol=6e-5)      # 4 decimals
        np.testing.assert_allclose(dense(h["w"], len(ex["src_tokens"])), weights, atol=5.1e-4)  # 3 decimals
        assert h["logprob"] == pytest.approx(np.log(probs).sum(), abs=1e-4) and h["score"] == h["logprob"]
        assert ex["cats"]["parity"] == ("even" if len(src) % 2 == 0 else "odd")


def test_summary_and_categories(page, pairs):
    data = page.data
    right = [ex["correct"] for ex in data["examples"]]
    s = data["summary"]
    assert s["n"] == len(pairs) and s["wrong"] == right.count(False)
    assert s["exact_match"] == pytest.approx(right.count(True) / len(pairs))
    assert list(data["categories"]) == ["length", "parity"]
    for name, table in data["categories"].items():
        assert sum(m["n"] for m in table.values()) == len(pairs)
        for label, m in table.items():
            mine = [ex["correct"] for ex in data["examples"] if ex["cats"][name] == label]
            assert m["exact_match"] == pytest.approx(sum(mine) / len(mine))


def test_beam_search_keeps_every_hypothesis_with_its_attention(tiny_run, pairs):
    srcs = [s for s, _ in pairs[:12]]
    data = explore(str(tiny_run), srcs, beam=3).data
    found = Translator(str(tiny_run)).translate(srcs, beam=3, n_best=3)
    assert data["summary"]["exact_match"] is None and data["categories"] == {}
    for ex, tr in zip(data["examples"], found):
        assert [h["text"] for h in ex["hyps"]] == [text for text, _ in tr.nbest]
        assert [h["score"] for h in ex["hyps"]] == pytest.approx([score for _, score in tr.nbest], abs=1e-5)
        assert ex["hyps"][0]["tokens"] == tr.out_tokens
        np.testing.assert_allclose(dense(ex["hyps"][0]["w"], len(ex["src_tokens"])), tr.weights, atol=5.1e-4)
        for h in ex["hyps"]:
            assert len(h["w"]) == len(h["tokens"]) == len(h["probs"])
            assert ex["correct"] is None and h["correct"] is None


def test_the_reference_scored_is_the_models_teacher_forced_reading(tiny_run, page, pairs):
    """Each example's ref_scored: the reference's tokens with the model's probability of each, teacher forced,
    and the attention over the source for each: what attnseq.score gives; for an output equal to the
    reference, its own tokens and attention again."""
    import attnseq
    scored = attnseq.score(str(tiny_run), [s for s, _ in pairs], [t for _, t in pairs], alpha=0.0)
    for ex, sc in zip(page.data["examples"], scored):
        r = ex["ref_scored"]
        assert r["tokens"] == sc.tokens and r["text"] == ex["ref_norm"]
        np.testing.assert_allclose(r["probs"], np.exp(sc.token_logprobs), atol=6e-5)
        np.testing.assert_allclose(dense(r["w"], len(ex["src_tokens"])), sc.weights, atol=5.1e-4)
        assert r["logprob"] == pytest.approx(sc.logprob, abs=1e-6) and r["score"] == r["logprob"]
        if ex["correct"]:
            h = ex["hyps"][0]
            assert r["tokens"] == h["tokens"] and r["w"] == h["w"]
    assert any(not ex["correct"] for ex in page.data["examples"])
    assert all(ex["ref_scored"] is None for ex in explore(str(tiny_run), [pairs[0][0]]).data["examples"])


def test_sparse_rows_round_trip():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.full(9, 0.1), size=7)                          # peaked rows, like attention
    w[2] = 0.0
    w[4, :3] = w[4, -2:] = 0.0
    rows = sparse_rows(w)
    assert rows[2] == [0] and rows[4][0] >= 3 and len(rows[4]) <= 1 + 4
    np.testing.assert_allclose(dense(rows, 9), w, atol=5e-4 + 1e-12)
    assert all(isinstance(v, int) for r in rows for v in r)


def test_script_text_cannot_close_the_data_block(tiny_run):
    nasty = ["</script><script>alert(1)</script>", "a & b <!-- c"]
    page = explore(str(tiny_run), nasty, ["x", "y"])
    text = page.html()
    assert text.count("</script>") == 3                 # the data block's, the heatmap's and the page's code
    assert "alert(1)</script>" not in text
    assert [ex["src"] for ex in read_embedded(text)["examples"]] == nasty
    assert "<" not in embed_json({"a": "<>&"})


def test_page_is_self_contained_and_small(tiny_run, tiny_data):
    pairs = read_pairs(tiny_data / "train.tsv")[:1000]
    text = explore(str(tiny_run), [s for s, _ in pairs], [t for _, t in pairs]).html()
    assert len(text.encode("utf-8")) < 5_000_000
    for remote in ('src="http', "src='http", 'href="http', "@import", "url(http", "fetch(", "XMLHttpRequest"):
        assert remote not in text


def test_save_notebook_view_and_bad_model(tiny_run, tmp_path, pairs):
    page = explore(load_checkpoint(str(tiny_run)), [pairs[0][0]])
    path = page.save(tmp_path / "p.html")
    assert path.read_text(encoding="utf-8") == page.html()
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]           # no temporary left behind
    view = page._repr_html_()
    assert view.startswith("<iframe srcdoc=\"") and "&lt;script" in view and "<script" not in view
    with pytest.raises(TypeError, match="needs a model with its tokenizers"):
        explore(load_checkpoint(str(tiny_run)).model, ["x"])
    with pytest.raises(ValueError, match="references: 2 given for 1 sources"):
        explore(str(tiny_run), ["x"], ["a", "b"])


def test_cli_explore(tiny_run, tmp_path, capsys):
    from attnseq.data.datasets import date_tables
    rows = date_tables(5)["test"][:30]
    data = tmp_path / "styled.tsv"
    data.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "page.html"
    assert main(["explore", "--ckpt", str(tiny_run), "--data", str(data), "--n", "20", "--by", "style",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    got = read_embedded(out.read_text(encoding="utf-8"))
    assert len(got["examples"]) == 20
    assert [ex["cats"]["style"] for ex in got["examples"]] == [r[2] for r in rows[:20]]
    assert set(got["categories"]["style"]) == {r[2] for r in rows[:20]}
    with pytest.raises(SystemExit) as e:                                    # a usage error, before any work
        main(["explore", "--ckpt", str(tiny_run), "--data", str(data), "--n", "-1", "--out", str(out)])
    assert e.value.code == 2 and "argument --n: must be 0 or a positive integer, got '-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n must be at least 1"):          # the library keeps its own check
        explore_file(str(tiny_run), data, n=-1)
    assert len(explore_file(str(tiny_run), data, n=None).data["examples"]) == 30


# -- in a browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    b = start_browser()
    yield b
    b.quit()


@pytest.fixture(scope="module")
def page_file(page, tmp_path_factory):
    return page.save(tmp_path_factory.mktemp("explore") / "page.html")


def _open(browser, path):
    from selenium.webdriver.common.by import By
    browser.get(path.resolve().as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _shown(browser):
    from selenium.webdriver.common.by import By
    return [int(li.get_attribute("data-i")) for li in browser.find_elements(By.CSS_SELECTOR, "#list li")]


def _selected(browser):
    from selenium.webdriver.common.by import By
    return int(browser.find_element(By.ID, "detail").get_attribute("data-i"))


@pytest.mark.browser
def test_browser_filter_select_and_hover(browser, page_file, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    examples = page.data["examples"]
    _open(browser, page_file)
    assert _shown(browser) == list(range(len(examples)))
    browser.find_element(By.CSS_SELECTOR, "button[data-filter=wrong]").click()
    wrong = [i for i, ex in enumerate(examples) if ex["correct"] is False]
    assert wrong, "the tiny model should get some examples wrong"
    assert _shown(browser) == wrong
    pick = browser.find_elements(By.CSS_SELECTOR, "#list li")[len(wrong) // 2]
    pick.click()
    i = _selected(browser)
    assert i == wrong[len(wrong) // 2]
    detail = browser.find_element(By.ID, "detail").text
    assert examples[i]["src"] in detail and examples[i]["ref"] in detail
    h = examples[i]["hyps"][0]
    w = dense(h["w"], len(examples[i]["src_tokens"]))
    out_tokens = browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")
    assert len(out_tokens) == len(h["tokens"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap .cell")) == w.size
    for t in range(len(h["tokens"])):
        ActionChains(browser).move_to_element(out_tokens[t]).perform()
        lit = [int(e.get_attribute("data-s")) for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .src-tok.hl")]
        assert lit == [s for s in range(w.shape[1]) if w[t, s] >= HL_MIN], t
        best = browser.find_element(By.CSS_SELECTOR, "#heatmap .src-tok.hl-max")
        assert int(best.get_attribute("data-s")) == int(w[t].argmax())
        tip = browser.find_element(By.ID, "tip")
        assert tip.is_displayed() and f"{w[t].max():.3f}" in tip.text
    src_tokens = browser.find_elements(By.CSS_SELECTOR, "#heatmap .src-tok")
    s = int(w.sum(axis=0).argmax())
    ActionChains(browser).move_to_element(src_tokens[s]).perform()
    lit = [int(e.get_attribute("data-t")) for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok.hl")]
    assert lit == [t for t in range(w.shape[0]) if w[t, s] >= HL_MIN]


@pytest.mark.browser
def test_browser_keys_search_and_sort(browser, page_file, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    examples = page.data["examples"]
    _open(browser, page_file)
    body = browser.find_element(By.TAG_NAME, "body")
    assert _selected(browser) == 0
    body.send_keys("jjj")
    assert _selected(browser) == 3
    body.send_keys("k", Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert _selected(browser) == 4
    body.send_keys("G")
    assert _selected(browser) == len(examples) - 1
    body.send_keys("c")
    assert _shown(browser) == [i for i, ex in enumerate(examples) if ex["correct"]]
    body.send_keys("a", "/")
    search = browser.find_element(By.ID, "search")
    assert browser.switch_to.active_element == search
    query = examples[7]["src"][-4:]
    search.send_keys(query, Keys.ESCAPE)
    hits = [i for i, ex in enumerate(examples)
            if query.lower() in "\n".join([ex["src"], ex["hyps"][0]["text"], ex["ref"]]).lower()]
    assert 7 in hits and _shown(browser) == hits
    search.send_keys(Keys.END, Keys.BACKSPACE * len(query), Keys.ESCAPE)  # empty again, and out of the box
    assert _shown(browser) == list(range(len(examples)))
    body.send_keys("s")                                                  # score, lowest first
    scores = [examples[i]["hyps"][0]["score"] for i in _shown(browser)]
    assert scores == sorted(scores) and len(scores) == len(examples)
    browser.find_element(By.CSS_SELECTOR, "#cats tbody tr").click()     # a category row filters the list
    name = browser.find_element(By.ID, "cat-name").get_attribute("value")
    label = browser.find_element(By.CSS_SELECTOR, "#cats tbody tr.on").get_attribute("data-label")
    assert sorted(_shown(browser)) == [i for i, ex in enumerate(examples) if ex["cats"][name] == label]


@pytest.mark.browser
def test_browser_beam_hypotheses_and_screenshot(browser, tiny_run, pairs, tmp_path):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By
    data = explore(str(tiny_run), [s for s, _ in pairs[:10]], [t for _, t in pairs[:10]], beam=3)
    _open(browser, data.save(tmp_path / "beam.html"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#nbest tr.hyp")
    assert len(rows) == 3
    second = data.data["examples"][0]["hyps"][1]
    rows[1].click()
    assert browser.find_element(By.ID, "detail").get_attribute("data-hyp") == "1"
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")]
    assert len(shown) == len(second["tokens"])
    browser.find_element(By.TAG_NAME, "body").send_keys("p")
    assert browser.find_element(By.ID, "detail").get_attribute("data-hyp") == "0"
    png = browser.get_screenshot_as_png()
    (tmp_path / "explorer.png").write_bytes(png)
    pixels = imread(io.BytesIO(png))[..., :3]
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800
    assert pixels.std() > 0.05                                           # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50            # heatmap colours, text, ...


@pytest.mark.browser
def test_browser_the_reference_scored_beside_the_output(browser, page_file, page):
    """The toggle shows the reference as the model scores it: its tokens, their probabilities, its heatmap;
    the key r switches back, and the view stays while browsing."""
    from selenium.webdriver.common.by import By
    examples = page.data["examples"]
    _open(browser, page_file)
    body = browser.find_element(By.TAG_NAME, "body")
    wrong = next(i for i, ex in enumerate(examples) if ex["correct"] is False
                 and ex["ref_scored"]["tokens"] != ex["hyps"][0]["tokens"])
    body.send_keys("j" * wrong)
    assert _selected(browser) == wrong

    def shown():
        detail = browser.find_element(By.ID, "detail")
        return detail.get_attribute("data-view"), [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")]
    view, tokens = shown()
    assert view == "out" and len(tokens) == len(examples[wrong]["hyps"][0]["tokens"])
    browser.find_element(By.CSS_SELECTOR, "#view button[data-view=ref]").click()
    ref = examples[wrong]["ref_scored"]
    view, tokens = shown()
    assert view == "ref" and len(tokens) == len(ref["tokens"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap .cell")) == len(ref["tokens"]) * len(examples[wrong]["src_tokens"])
    text = browser.find_element(By.ID, "detail").text
    assert "the reference as the model reads it" in text and f"{ref['logprob']:.4f}" in text
    assert browser.find_element(By.CSS_SELECTOR, "#view button.on").get_attribute("data-view") == "ref"
    body.send_keys("j")                                                  # the view stays on the next example
    assert shown()[0] == "ref" and len(shown()[1]) == len(examples[wrong + 1]["ref_scored"]["tokens"])
    body.send_keys("r")
    assert shown()[0] == "out" and len(shown()[1]) == len(examples[wrong + 1]["hyps"][0]["tokens"])


def test_token_probs_batches_are_padded_and_start_with_bos_for_every_engine():
    """TranslatorBase.token_probs pads each batch of sources and of [bos] + output, for any engine's
    teacher_forced_probs, and cuts each row's probabilities to its own output's length."""
    from attnseq.data.tokenizers import BOS_ID, PAD_ID
    from attnseq.run.inference import TranslatorBase

    class Engine(TranslatorBase):
        """Its "probability" of a token is the token's id / 100, so each row shows what was fed."""
        def __init__(self):
            self.batches = []

        def teacher_forced_probs(self, src, tgt):
            self.batches.append((src.tolist(), tgt.tolist()))
            return tgt[:, 1:] / 100.0

    engine = Engine()
    probs = engine.token_probs([[5], [6, 7], [8, 9, 10]], [[3, 2], np.array([4, 4, 2]), [2]], batch_size=2)
    assert [p.tolist() for p in probs] == [[0.03, 0.02], [0.04, 0.04, 0.02], [0.02]]
    assert all(p.dtype == np.float64 for p in probs)
    assert engine.batches == [([[5, PAD_ID], [6, 7]], [[BOS_ID, 3, 2, PAD_ID], [BOS_ID, 4, 4, 2]]),
                              ([[8, 9, 10]], [[BOS_ID, 2]])]
