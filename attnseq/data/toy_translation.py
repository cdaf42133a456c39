"""A toy English -> Korean translation task from a small grammar and lexicon.

English is SVO; Korean is SOV with particles, so attention must learn to reorder:
"The cat ate the fish in the park yesterday." -> "고양이는 어제 공원에서 물고기를 먹었어요."
Korean word order here: subject+topic, time, place+에서 (or destination+에), object+을/를, verb.

The grammar covers adjectives, numbers with counters (고양이 두 마리), plural 들, three tenses,
negation (안), yes/no questions, relative clauses ("the man who reads the book" -> "책을 읽는 남자")
and clauses joined by "and" (-고). Verbs are regular, and are conjugated by composing Hangul syllables
(polite -아요/-어요 style). The mapping is a function: one English sentence has one Korean translation.
"""
from __future__ import annotations

import random

# -- Hangul -------------------------------------------------------------------------------
_A, _EO, _O, _WA, _U, _WO, _YEO, _EU = 0, 4, 8, 9, 13, 14, 6, 18
_T_N, _T_L, _T_SS = 4, 8, 20


def _split(syl: str):
    code = ord(syl) - 0xAC00
    return code // 588, (code % 588) // 28, code % 28


def _join(L: int, V: int, T: int = 0) -> str:
    return chr(0xAC00 + (L * 21 + V) * 28 + T)


def has_batchim(word: str) -> bool:
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def _add_final(word: str, T: int) -> str:
    L, V, _ = _split(word[-1])
    return word[:-1] + _join(L, V, T)


def particle(word: str, with_final: str, without: str) -> str:
    return word + (with_final if has_batchim(word) else without)


class Verb:
    """A regular Korean verb stem with its English forms (base, 3rd singular, past)."""

    def __init__(self, en: tuple[str, str, str], stem: str, objects: str = "", noun_hada: bool = False):
        self.en, self.stem, self.objects, self.noun_hada = en, stem, objects, noun_hada

    def infinitive(self) -> str:
        """The -아/-어 form: 먹어, 가, 봐, 마셔, 해."""
        s = self.stem
        if s.endswith("하"):
            return s[:-1] + "해"
        L, V, T = _split(s[-1])
        if T:
            return s + ("아" if V in (_A, _O) else "어")
        change = {_O: _WA, _U: _WO, 20: _YEO, _EU: _EO}
        if V in change:
            return s[:-1] + _join(L, change[V])
        return s if V in (_A, _EO, 1, 5) else s + "어"

    def finite(self, tense: str) -> str:
        if tense == "present":
            return self.infinitive() + "요"
        if tense == "past":
            return _add_final(self.infinitive(), _T_SS) + "어요"
        return self._future_stem() + " 거예요"

    def _future_stem(self) -> str:
        return self.stem + "을" if has_batchim(self.stem) else _add_final(self.stem, _T_L)

    def connective(self, tense: str) -> str:
        """Clause + 고 ("and"), keeping the tense: 먹고, 먹었고, 먹을 거고."""
        if tense == "present":
            return self.stem + "고"
        if tense == "past":
            return _add_final(self.infinitive(), _T_SS) + "고"
        return self._future_stem() + " 거고"

    def relative(self, tense: str) -> str:
        """Attributive form: 먹는 / 먹은 (present / past)."""
        if tense == "present":
            return self.stem + "는"
        return self.stem + "은" if has_batchim(self.stem) else _add_final(self.stem, _T_N)

    def negate(self, form: str) -> str:
        if self.noun_hada:                     # 공부해요 -> 공부 안 해요
            noun = self.stem[:-1]
            return f"{noun} 안 {form[len(noun):]}"
        return f"안 {form}"


# -- lexicon ---------------------------------------------------------------------------------
# (english singular, english plural, korean, category); categories decide what verbs take them.
NOUNS = [
    ("man", "men", "남자", "person"), ("woman", "women", "여자", "person"), ("child", "children", "아이", "person"),
    ("student", "students", "학생", "person"), ("teacher", "teachers", "선생님", "person"),
    ("doctor", "doctors", "의사", "person"), ("farmer", "farmers", "농부", "person"),
    ("friend", "friends", "친구", "person"), ("baby", "babies", "아기", "person"), ("boy", "boys", "소년", "person"),
    ("girl", "girls", "소녀", "person"), ("king", "kings", "왕", "person"), ("singer", "singers", "가수", "person"),
    ("cook", "cooks", "요리사", "person"), ("soldier", "soldiers", "군인", "person"),
    ("cat", "cats", "고양이", "animal"), ("dog", "dogs", "개", "animal"), ("bird", "birds", "새", "animal"),
    ("horse", "horses", "말", "animal"), ("cow", "cows", "소", "animal"), ("rabbit", "rabbits", "토끼", "animal"),
    ("tiger", "tigers", "호랑이", "animal"), ("fish", "fish", "물고기", "animal"), ("bear", "bears", "곰", "animal"),
    ("monkey", "monkeys", "원숭이", "animal"), ("duck", "ducks", "오리", "animal"), ("mouse", "mice", "쥐", "animal"),
    ("apple", "apples", "사과", "food"), ("bread", None, "빵", "food"), ("rice", None, "밥", "food"),
    ("cake", "cakes", "케이크", "food"), ("egg", "eggs", "계란", "food"), ("banana", "bananas", "바나나", "food"),
    ("orange", "oranges", "오렌지", "food"), ("sandwich", "sandwiches", "샌드위치", "food"),
    ("milk", None, "우유", "drink"), ("water", None, "물", "drink"), ("coffee", None, "커피", "drink"),
    ("tea", None, "차", "drink"), ("juice", None, "주스", "drink"),
    ("book", "books", "책", "text"), ("letter", "letters", "편지", "text"), ("newspaper", "newspapers", "신문", "text"),
    ("story", "stories", "이야기", "text"), ("song", "songs", "노래", "text"),
    ("phone", "phones", "전화기", "thing"), ("computer", "computers", "컴퓨터", "thing"),
    ("car", "cars", "자동차", "thing"), ("bicycle", "bicycles", "자전거", "thing"), ("ball", "balls", "공", "thing"),
    ("chair", "chairs", "의자", "thing"), ("table", "tables", "탁자", "thing"), ("door", "doors", "문", "thing"),
    ("window", "windows", "창문", "thing"), ("picture", "pictures", "그림", "thing"), ("bag", "bags", "가방", "thing"),
    ("hat", "hats", "모자", "thing"), ("key", "keys", "열쇠", "thing"), ("flower", "flowers", "꽃", "thing"),
    ("umbrella", "umbrellas", "우산", "thing"), ("pencil", "pencils", "연필", "thing"), ("cup", "cups", "컵", "thing"),
    ("box", "boxes", "상자", "thing"), ("clock", "clocks", "시계", "thing"), ("camera", "cameras", "카메라", "thing"),
]
COUNTERS = {"person": "명", "animal": "마리", "food": "개", "thing": "개", "text": "권"}
PLACES = [("park", "공원"), ("school", "학교"), ("house", "집"), ("library", "도서관"), ("restaurant", "식당"),
          ("market", "시장"), ("hospital", "병원"), ("office", "사무실"), ("kitchen", "부엌"), ("garden", "정원"),
          ("station", "역"), ("beach", "해변"), ("church", "교회"), ("store", "가게"), ("zoo", "동물원")]
PRONOUNS = [("I", "저", False), ("you", "당신", False), ("he", "그", True), ("she", "그녀", True),
            ("we", "우리", False), ("they", "그들", False)]
NUMBERS = [("two", "두"), ("three", "세"), ("four", "네"), ("five", "다섯")]
TIMES = {"present": [("every day", "매일"), ("today", "오늘"), ("now", "지금")],
         "past": [("yesterday", "어제"), ("today", "오늘"), ("last night", "어젯밤")],
         "future": [("tomorrow", "내일"), ("today", "오늘"), ("next week", "다음 주")]}
ADJECTIVES = [  # (english, korean attributive, categories)
    ("big", "큰", "person animal thing food"), ("small", "작은", "person animal thing food"),
    ("good", "좋은", "person animal thing food text"), ("bad", "나쁜", "person animal"),
    ("new", "새로운", "thing text"), ("old", "오래된", "thing text"), ("pretty", "예쁜", "person animal thing"),
    ("expensive", "비싼", "thing food"), ("cheap", "싼", "thing food"), ("hot", "뜨거운", "drink food"),
    ("cold", "차가운", "drink food"), ("happy", "행복한", "person animal"), ("quiet", "조용한", "person animal"),
    ("busy", "바쁜", "person"), ("young", "젊은", "person"), ("long", "긴", "text thing"),
    ("short", "짧은", "text thing"), ("heavy", "무거운", "thing"), ("light", "가벼운", "thing"),
    ("dirty", "더러운", "thing animal"), ("famous", "유명한", "person text"), ("kind", "친절한", "person"),
    ("smart", "똑똑한", "person animal"), ("fast", "빠른", "animal thing"), ("slow", "느린", "animal thing"),
    ("white", "하얀", "animal thing"), ("black", "검은", "animal thing"), ("red", "빨간", "thing food"),
    ("blue", "파란", "thing"), ("yellow", "노란", "thing food"), ("sweet", "달콤한", "food drink"),
    ("beautiful", "아름다운", "person animal thing text"), ("strong", "강한", "person animal"),
    ("sad", "슬픈", "person animal text"), ("tired", "피곤한", "person animal"), ("brave", "용감한", "person"),
    ("lazy", "게으른", "person animal"), ("fresh", "신선한", "food drink"), ("funny", "재미있는", "person text"),
]
TRANSITIVE = [
    Verb(("eat", "eats", "ate"), "먹", "food"), Verb(("drink", "drinks", "drank"), "마시", "drink"),
    Verb(("read", "reads", "read"), "읽", "text"), Verb(("write", "writes", "wrote"), "쓰", "text"),
    Verb(("buy", "buys", "bought"), "사", "food drink thing text"),
    Verb(("see", "sees", "saw"), "보", "person animal thing food"),
    Verb(("like", "likes", "liked"), "좋아하", "person animal thing food drink text"),
    Verb(("love", "loves", "loved"), "사랑하", "person animal"),
    Verb(("clean", "cleans", "cleaned"), "청소하", "thing", noun_hada=True),
    Verb(("close", "closes", "closed"), "닫", "thing"), Verb(("find", "finds", "found"), "찾", "person animal thing text"),
    Verb(("wash", "washes", "washed"), "씻", "thing food animal"), Verb(("catch", "catches", "caught"), "잡", "animal thing"),
    Verb(("draw", "draws", "drew"), "그리", "person animal thing food"),
    Verb(("throw", "throws", "threw"), "던지", "thing food"), Verb(("pull", "pulls", "pulled"), "당기", "thing"),
    Verb(("learn", "learns", "learned"), "배우", "text"), Verb(("cook", "cooks", "cooked"), "요리하", "food", noun_hada=True),
    Verb(("meet", "meets", "met"), "만나", "person"), Verb(("kick", "kicks", "kicked"), "차", "thing"),
    Verb(("send", "sends", "sent"), "보내", "text thing"),
    Verb(("order", "orders", "ordered"), "주문하", "food drink thing", noun_hada=True),
    Verb(("want", "wants", "wanted"), "원하", "food drink thing text"),
    Verb(("wait for", "waits for", "waited for"), "기다리", "person animal"),
]
INTRANSITIVE = [
    Verb(("sleep", "sleeps", "slept"), "자"), Verb(("run", "runs", "ran"), "뛰"),
    Verb(("walk", "walks", "walked"), "산책하", noun_hada=True), Verb(("swim", "swims", "swam"), "수영하", noun_hada=True),
    Verb(("dance", "dances", "danced"), "춤추"), Verb(("laugh", "laughs", "laughed"), "웃"),
    Verb(("sing", "sings", "sang"), "노래하", noun_hada=True), Verb(("study", "studies", "studied"), "공부하", noun_hada=True),
    Verb(("work", "works", "worked"), "일하", noun_hada=True), Verb(("rest", "rests", "rested"), "쉬"),
    Verb(("sit", "sits", "sat"), "앉"),
]
MOTION = [Verb(("go", "goes", "went"), "가"), Verb(("come", "comes", "came"), "오")]


def _article(word: str, rng: random.Random) -> str:
    if rng.random() < 0.6:
        return "the"
    return "an" if word[0] in "aeiou" else "a"


class Phrase:
    """A noun phrase in both languages; ``third`` is whether English agrees in 3rd singular."""

    def __init__(self, en: str, ko: str, third: bool):
        self.en, self.ko, self.third = en, ko, third


def noun_phrase(rng: random.Random, cats: str, allow_number: bool, depth: int) -> Phrase:
    cats_l = cats.split()
    en_s, en_p, ko, cat = rng.choice([n for n in NOUNS if n[3] in cats_l])
    adjs = [a for a in ADJECTIVES if cat in a[2].split()]
    adj = rng.choice(adjs) if adjs and rng.random() < 0.35 else None
    r = rng.random()
    count = None
    if en_p is not None and allow_number and r < 0.2:
        count = rng.choice(NUMBERS)
    plural = en_p is not None and (count is not None or r > 0.8)
    noun_en = en_p if plural else en_s
    head_en = f"{adj[0]} {noun_en}" if adj else noun_en
    head_ko = f"{adj[1]} {ko}" if adj else ko
    rel = None
    if depth > 0 and rng.random() < 0.3 and cat in ("person", "animal"):
        rel = relative_clause(rng, plural, cat)
    if count is not None:
        en = f"{count[0]} {head_en}"
        ko_np = f"{head_ko} {count[1]} {COUNTERS[cat]}"
    elif plural:
        en = f"the {head_en}" if rng.random() < 0.5 else head_en
        ko_np = head_ko + "들"
    elif en_p is None:                    # mass noun
        en = f"the {head_en}" if rng.random() < 0.5 else head_en
        ko_np = head_ko
    else:
        en = f"{_article(head_en, rng)} {head_en}"
        ko_np = head_ko
    if rel:
        en = f"{en} {rel[0]}"
        ko_np = f"{rel[1]} {ko_np}"
    return Phrase(en, ko_np, not plural)


def relative_clause(rng: random.Random, plural: bool, cat: str) -> tuple[str, str]:
    """'who reads the book' -> ('책을 읽는' placed before the noun)."""
    tense = rng.choice(["present", "past"])
    pron = "who" if cat == "person" else "that"
    if rng.random() < 0.7:
        verb = rng.choice(TRANSITIVE)
        obj = noun_phrase(rng, verb.objects, allow_number=False, depth=0)
        en_v = verb.en[2] if tense == "past" else (verb.en[0] if plural else verb.en[1])
        return f"{pron} {en_v} {obj.en}", f"{particle(obj.ko, '을', '를')} {verb.relative(tense)}"
    verb = rng.choice(INTRANSITIVE)
    en_v = verb.en[2] if tense == "past" else (verb.en[0] if plural else verb.en[1])
    return f"{pron} {en_v}", verb.relative(tense)


def subject(rng: random.Random, depth: int) -> Phrase:
    if rng.random() < 0.3:
        en, ko, third = rng.choice(PRONOUNS)
        return Phrase(en, ko, third)
    return noun_phrase(rng, "person animal", allow_number=False, depth=depth)


def clause(rng: random.Random, tense: str, negate: bool, question: bool, depth: int):
    """One clause: (english words without final punctuation, korean parts before the verb, verb, tense)."""
    subj = subject(rng, depth)
    kind = rng.random()
    pre_ko, post_en = [], []
    if kind < 0.6:
        verb = rng.choice(TRANSITIVE)
        obj = noun_phrase(rng, verb.objects, allow_number=True, depth=depth)
        obj_ko, obj_en = particle(obj.ko, "을", "를"), obj.en
    elif kind < 0.85:
        verb, obj_ko, obj_en = rng.choice(INTRANSITIVE), None, None
    else:
        verb = rng.choice(MOTION)
        place_en, place_ko = rng.choice(PLACES)
        obj_en, obj_ko = f"to the {place_en}", place_ko + "에"
    if verb not in MOTION and rng.random() < 0.3:
        place_en, place_ko = rng.choice(PLACES)
        post_en.append(f"in the {place_en}")
        pre_ko.append(place_ko + "에서")
    if rng.random() < 0.3:
        t_en, t_ko = rng.choice(TIMES[tense])
        post_en.append(t_en)
        pre_ko.insert(0, t_ko)
    base, third_form, past = verb.en
    third, subj_en = subj.third, subj.en
    rest = ([obj_en] if obj_en else []) + post_en
    if question:
        aux = {"present": "does" if third else "do", "past": "did", "future": "will"}[tense]
        en = [aux, subj_en, base] + rest
    elif negate:
        aux = {"present": "does not" if third else "do not", "past": "did not", "future": "will not"}[tense]
        en = [subj_en, aux, base] + rest
    else:
        v = {"present": third_form if third else base, "past": past, "future": f"will {base}"}[tense]
        en = [subj_en, v] + rest
    ko = [particle(subj.ko, "은", "는")] + pre_ko + ([obj_ko] if obj_ko else [])
    return " ".join(en), ko, verb


def sentence(rng: random.Random) -> tuple[str, str]:
    tense = rng.choice(["present", "past", "future"])
    r = rng.random()
    if r < 0.15:                                              # yes/no question
        en, ko, verb = clause(rng, tense, False, True, depth=1)
        return _cap(en) + "?", " ".join(ko + [verb.finite(tense)]) + "?"
    if r < 0.3:                                               # two clauses joined by "and"
        neg1, neg2 = rng.random() < 0.2, rng.random() < 0.2
        en1, ko1, v1 = clause(rng, tense, neg1, False, depth=1)
        en2, ko2, v2 = clause(rng, tense, neg2, False, depth=1)
        c1 = v1.connective(tense)
        c1 = v1.negate(c1) if neg1 else c1
        f2 = v2.finite(tense)
        f2 = v2.negate(f2) if neg2 else f2
        return _cap(f"{en1} and {en2}") + ".", " ".join(ko1 + [c1] + ko2 + [f2]) + "."
    neg = rng.random() < 0.25
    en, ko, verb = clause(rng, tense, neg, False, depth=1)
    f = verb.finite(tense)
    return _cap(en) + ".", " ".join(ko + [verb.negate(f) if neg else f]) + "."


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


SIZES = {"train": 40000, "valid": 3000, "test": 3000}
MAX_TRAIN_WORDS = 20          # longer sentences (21-25 words) go to test only: the long subset
LONG_IN_TEST = 300


def make_splits(seed: int, sizes: dict = SIZES) -> dict[str, list[tuple[str, str]]]:
    """Distinct English sources; train and valid hold 3..20 words, test also 300 of 21..25."""
    rng = random.Random(seed)
    seen, short, long_ = set(), [], []
    need_short = sizes["train"] + sizes["valid"] + sizes["test"] - LONG_IN_TEST
    while len(short) < need_short or len(long_) < LONG_IN_TEST:
        en, ko = sentence(rng)
        n = len(en.split())
        if en in seen or n < 3 or n > 25:
            continue
        if n <= MAX_TRAIN_WORDS and len(short) < need_short:
            seen.add(en)
            short.append((en, ko))
        elif n > MAX_TRAIN_WORDS and len(long_) < LONG_IN_TEST:
            seen.add(en)
            long_.append((en, ko))
    a, b = sizes["train"], sizes["train"] + sizes["valid"]
    test = short[b:] + long_
    random.Random(seed + 1).shuffle(test)
    return {"train": short[:a], "valid": short[a:b], "test": test, "test-long": long_}
