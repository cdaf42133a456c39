"""The toy English -> Korean task, subword tokenizers, BLEU/chrF, and training on a user's corpus."""
import json

import pytest

from attnseq.cli import main
from attnseq.run.evaluation import bleu_chrf
from attnseq.plotting import readable, romanize_hangul
from attnseq.data.tokenizers import SentencePieceTokenizer, load_tokenizer
from attnseq.data.toy_translation import (MAX_TRAIN_WORDS, INTRANSITIVE, MOTION, TRANSITIVE, Verb, has_batchim,
                                     make_splits, particle)
from attnseq.data.corpus import shipped_dir


@pytest.fixture(scope="module")
def toy():
    return make_splits(1234)


def test_shipped_toy_data_regenerates(toy):
    for split in ("train", "valid", "test", "test-long"):
        text = "".join(f"{s}\t{t}\n" for s, t in toy[split])
        assert (shipped_dir("toy-en-ko") / f"{split}.tsv").read_text(encoding="utf-8") == text


def test_no_test_pair_in_train_and_long_subset(toy):
    train = {s for s, _ in toy["train"]}
    assert not train & {s for s, _ in toy["test"]}
    assert not train & {s for s, _ in toy["valid"]}
    longest_train = max(len(s.split()) for s in train)
    assert longest_train <= MAX_TRAIN_WORDS
    long_ = [s for s, _ in toy["test"] if len(s.split()) > longest_train]
    assert len(long_) == len(toy["test-long"]) >= 100
    assert all(3 <= len(s.split()) <= 25 for s, _ in toy["test"])


def test_translation_is_a_function(toy):
    seen = {}
    for s, t in toy["train"]:
        assert seen.setdefault(s, t) == t


def test_lexicon_is_one_to_one():
    stems = [v.stem for v in TRANSITIVE + INTRANSITIVE + MOTION]
    assert len(stems) == len(set(stems))


@pytest.mark.parametrize("stem, forms", [
    ("먹", ("먹어요", "먹었어요", "먹을 거예요", "먹는", "먹은")),
    ("가", ("가요", "갔어요", "갈 거예요", "가는", "간")),
    ("보", ("봐요", "봤어요", "볼 거예요", "보는", "본")),
    ("마시", ("마셔요", "마셨어요", "마실 거예요", "마시는", "마신")),
    ("배우", ("배워요", "배웠어요", "배울 거예요", "배우는", "배운")),
    ("쓰", ("써요", "썼어요", "쓸 거예요", "쓰는", "쓴")),
    ("공부하", ("공부해요", "공부했어요", "공부할 거예요", "공부하는", "공부한")),
])
def test_conjugation(stem, forms):
    v = Verb(("x", "xs", "xed"), stem)
    assert (v.finite("present"), v.finite("past"), v.finite("future"), v.relative("present"),
            v.relative("past")) == forms


def test_particles_follow_the_final_consonant():
    assert has_batchim("책") and not has_batchim("사과")
    assert particle("책", "을", "를") == "책을" and particle("사과", "을", "를") == "사과를"
    assert Verb(("study", "studies", "studied"), "공부하", noun_hada=True).negate("공부해요") == "공부 안 해요"


def test_sentence_reorders_svo_to_sov(toy):
    # "X verb the Y" -> "X는 Y를 verb": the object comes before the verb in Korean
    pairs = [(s, t) for s, t in toy["train"] if s.startswith("The cat ate the ")]
    assert pairs and all(t.startswith("고양이는 ") and t.endswith("먹었어요.") for s, t in pairs)


# -- tokenizers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_tok(toy):
    return SentencePieceTokenizer.train([t for _, t in toy["train"][:5000]], vocab_size=300)


def test_sentencepiece_round_trip(spm_tok, tmp_path):
    for text in ["고양이는 어제 공원에서 물고기를 먹었어요.", "", "그들은 역에 갔어요?"]:
        assert spm_tok.decode(spm_tok.encode(text)) == text
    ids = spm_tok.encode("고양이는 🐱 먹어요 zzz")
    assert 3 in ids                                   # unknown pieces become <unk>
    assert spm_tok.decode(ids).startswith("고양이는 ")
    spm_tok.save(tmp_path, "tgt_vocab")
    again = load_tokenizer(tmp_path, "tgt_vocab")
    assert again.encode("그들은 역에 갔어요?") == spm_tok.encode("그들은 역에 갔어요?")


def test_sentencepiece_vocab_grows_to_hold_every_character(toy):
    texts = [t for _, t in toy["train"][:2000]]
    with pytest.warns(UserWarning, match="cannot hold the .* distinct characters"):
        tok = SentencePieceTokenizer.train(texts, vocab_size=50)
    assert tok.vocab_size >= 50
    assert 3 not in tok.encode(texts[0]) and tok.decode(tok.encode(texts[0])) == texts[0]


def test_readable_pieces():
    assert readable("▁the") == "·the" and readable(" ") == "␣"
    assert romanize_hangul("학교에 가요") == "hakgyoe gayo"


# -- metrics ---------------------------------------------------------------------------------
def test_bleu_matches_sacrebleu():
    import sacrebleu
    hyps = ["the cat sat on the mat", "고양이는 물고기를 먹어요."]
    refs = ["the cat sat on a mat", "고양이는 생선을 먹어요."]
    ours = bleu_chrf(hyps, refs)
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert bleu_chrf(refs, refs)["bleu"] == pytest.approx(100.0)


# -- a user's corpus ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def user_corpus(tmp_path_factory, toy):
    """A Tatoeba/ManyThings-style file (with an attribution column) made from short toy pairs."""
    d = tmp_path_factory.mktemp("corpus")
    short = [(s, t) for s, t in toy["train"] if len(s.split()) <= 5][:3200]
    att = "\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (x) & #2 (y)"
    (d / "kor.txt").write_text("".join(f"{s}\t{t}{att}\n" for s, t in short[:3000]), encoding="utf-8")
    (d / "valid.txt").write_text("".join(f"{s}\t{t}{att}\n" for s, t in short[3000:]), encoding="utf-8")
    return d


def test_single_file_holds_out_validation(user_corpus, tmp_path, capsys):
    lines = (user_corpus / "kor.txt").read_text(encoding="utf-8").splitlines()[:400]
    (tmp_path / "small.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "small.txt"), "--out", str(tmp_path / "r"), "--epochs", "1",
                 "--hidden-size", "16", "--wordvec-size", "8", "--vocab-size", "200", "--no-plot", "--examples", "0"]) == 0
    assert "20 pairs of" in capsys.readouterr().out
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["valid_n"] == 20


def test_aligned_files_through_the_cli(tmp_path, toy):
    pairs = [(s, t) for s, t in toy["train"] if len(s.split()) <= 4][:300]
    (tmp_path / "c.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "c.ko").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "c"), "--source-lang", "en", "--target-lang", "ko",
                 "--out", str(tmp_path / "r"), "--epochs", "1", "--hidden-size", "16", "--wordvec-size", "8",
                 "--vocab-size", "150", "--no-plot", "--examples", "0"]) == 0
    (tmp_path / "d.ko").write_text("".join(t + "\n" for _, t in pairs[:-1]), encoding="utf-8")
    (tmp_path / "d.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "d"), "--source-lang", "en", "--target-lang", "ko",
                 "--out", str(tmp_path / "r2"), "--no-plot"]) == 1


@pytest.mark.slow
def test_train_on_user_corpus_reaches_bleu_well_above_chance(user_corpus, tmp_path, capsys):
    run = tmp_path / "kor"
    assert main(["train", "--train", str(user_corpus / "kor.txt"), "--valid", str(user_corpus / "valid.txt"),
                 "--out", str(run), "--vocab-size", "400", "--epochs", "8", "--hidden-size", "64",
                 "--wordvec-size", "64", "--batch-size", "32", "--lr", "0.01", "--no-plot", "--examples", "0"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "valid_bleu" in rows[0] and "valid_chrf" in rows[0]
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--data", str(user_corpus / "valid.txt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bleu"] > 50, result        # chance is about 0-5
    assert (run / "best" / "src_vocab.spm.model").exists() and (run / "best" / "tgt_vocab.spm.model").exists()


def test_shared_vocabulary(user_corpus, tmp_path):
    run = tmp_path / "shared"
    assert main(["train", "--train", str(user_corpus / "kor.txt"), "--valid", str(user_corpus / "valid.txt"),
                 "--out", str(run), "--shared-vocab", "--vocab-size", "600", "--epochs", "1", "--hidden-size", "16",
                 "--wordvec-size", "8", "--no-plot", "--examples", "0"]) == 0
    best = run / "best"
    assert (best / "src_vocab.spm.model").read_bytes() == (best / "tgt_vocab.spm.model").read_bytes()
    from attnseq.run.checkpoint import load_checkpoint
    ck = load_checkpoint(run)
    assert ck.model.config["src_vocab_size"] == ck.model.config["tgt_vocab_size"] == ck.src_tok.vocab_size
    assert ck.src_tok.encode("고양이") == ck.tgt_tok.encode("고양이")
