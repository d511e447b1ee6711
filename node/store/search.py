"""Staff lists and search: ``GET /api/{role}/requests`` and the CLIs' list commands.

Every page is an index range read, newest first by ``(updated_at, id)``:

- with no ``q``, through the ``(role, [status,] updated_at, id)`` indexes, or with
  ``partner``, ``(lower(partner), role, updated_at, id)`` (any case, migration 0004);
- an extra filter naming few requests (:class:`Identifies`: the lending list's
  ``?barcode=``) is read like an identifier below: the matches looked up, then sorted;
- ``q`` is first taken as an identifier, by indexed equalities: our public id, the
  requesting and supplying request ids, a borrowing attempt's request id, the patron id,
  an item barcode (``request_barcodes``); each in any case, through indexes on
  ``lower(...)`` (migrations 0004 and 0005), as the desk's scans; our public id (upper
  case) typed in lower case too.  When nothing has that identifier, as title words
  (every word; the last one as a prefix) through full text: FTS5 (``transactions_fts``)
  on SQLite, the GIN index on ``to_tsvector('simple', title)`` on PostgreSQL.  Up to
  :data:`COUNT_LIMIT` matches are read from those indexes and sorted; with more (common
  words) the list's index is walked instead, each row tested: on SQLite against the
  whole match set, which FTS5 builds once (~10 ms per 100,000) and reads one at a time,
  newest first, when counting (so counting stops at COUNT_LIMIT), or, when those newest
  matches say the words are common at the top of the list, an ASCII title by GLOB as
  FTS5 splits it (a common word at 1M requests: ~8 against ~17 ms); on PostgreSQL by its
  title, each word looked for in it first (~0.3 us a row), then by full text (~3 us).
  PostgreSQL's GIN index reads all the matches before the first (~28 ms per 100,000 for
  a prefix), so there the words' shares of titles are first estimated from the index's
  statistics (its most common lexemes, kept by ANALYZE): common words are counted
  walking the list, newest first, up to COUNT_LIMIT; otherwise the matches of the rarest
  word only are read through GIN and tested for the others (a rare word and a common
  one).  The last word is costly as a prefix: GIN gathers every title holding a word it
  starts before the first match, where whole words are read together, skipping along
  their lists.  So it is read as the title words it starts, whole (``title_lexemes``,
  kept by the triggers of migration 0006; three common words at 1M requests: ~14 against
  ~28 ms).  When it starts more than :data:`STARTING_LIMIT`, it stays a prefix, and, by
  the estimates, the facets are first counted on the titles holding it whole, which are
  all they need when more than COUNT_LIMIT.  A wrong estimate changes only the time
  taken; without statistics (a new table) the matches of every word are read through
  GIN, then walked if too many.

With ``needs_attention``, title words are tested on each request of that short queue,
walked through its own index in list order, rather than read from the words' index.
When all the matches are counted (up to COUNT_LIMIT), the page takes them by id rather
than reading the words' index a second time.

Pages follow each other by an opaque cursor (the last row's ``(updated_at, id)``), so
requests arriving while staff page through do not shift the pages; ``offset`` still
works for numbered pages.  The facets (requests per status) of a plain list come
from ``status_counts``; with ``q`` or another filter they are counted over the
matches, up to :data:`COUNT_LIMIT`.

``status_counts``, ``request_barcodes`` and ``transactions_fts`` are kept in step by
the triggers of migration 0003, ``title_lexemes`` by those of 0006, whoever writes
``transactions``.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    LargeBinary,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
    tuple_,
    union,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

#: Matches counted for the facets of a search at most; beyond it ``total_exact`` is false
#: (the console shows "500+").  Counting is most of a common word's search: at 1M
#: requests on PostgreSQL, 15 ms with 500 against 27 ms with 1,000.
COUNT_LIMIT = 500

#: PostgreSQL walks the list for title words when the rows it tests to find COUNT_LIMIT
#: matches (COUNT_LIMIT / share) are fewer than the matches GIN would read (share x rows)
#: over this: a row tested costs ~4 matches read through GIN (measured at 1M requests).
WALK_COST = 4
#: Several words, the rarest in more titles than this x COUNT_LIMIT: all read through
#: GIN, rather than the rarest alone and the others tested on each of its matches.
RAREST_ALONE = 20
#: Seconds the title words' statistics are kept: they change only on ANALYZE.
STATS_SECONDS = 300
#: SQLite: a row walked testing its title (read from the table, GLOB) costs ~5 us, as
#: much as ~50 matches put in the set FTS5 builds (~10 ms per 100,000) to test rows by.
TITLE_TEST_COST = 50
#: PostgreSQL reads the last word as a prefix when it starts more title words than this,
#: else those words whole: 111 of them, each one's list read through GIN, ~0.5 ms at 1M.
STARTING_LIMIT = 128

_FTS = table("transactions_fts", column("rowid"))
_WORD = re.compile(r"\w+")
#: Per database: (when to read them again, the most common title words' shares or None).
_word_stats: dict[Any, tuple[float, dict[str, float] | None]] = {}


def same_text(column, value: str):
    """``column`` equals ``value`` in any case, as the indexes on ``lower(column)`` serve
    (migration 0004): SQL's ``lower`` on both sides, since SQLite's folds ASCII only."""
    return func.lower(column) == func.lower(literal(value.strip(), String))


@dataclass(frozen=True)
class Identifies:
    """An extra filter naming few requests (a scanned barcode): ``ids`` selects their ids
    from an index, so they are looked up and sorted rather than the list walked."""

    ids: Any


#: The columns a list shows (:func:`row_view`), and the id for the cursor: not the
#: state, whose JSON would be read and decoded for every row of the page.
_LISTED = [t.transactions.c[name] for name in (
    "id", "public_id", "role", "status", "partner", "title", "patron_id",
    "requesting_request_id", "supplying_request_id", "needs_attention", "created_at",
    "updated_at")]


def row_view(row) -> dict[str, Any]:
    """A request as the staff lists show it."""
    return {
        "id": row.public_id, "role": row.role, "status": row.status, "partner": row.partner,
        "title": row.title, "patron_id": row.patron_id,
        "requesting_request_id": row.requesting_request_id,
        "supplying_request_id": row.supplying_request_id,
        "needs_attention": row.needs_attention,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
    }


def encode_cursor(updated_at: datetime, tx_id: int) -> str:
    raw = json.dumps([updated_at.isoformat(), tx_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The position a cursor from :func:`search` stands for; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, tx_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(tx_id, int):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"cursor {cursor!r} is not one this server gave out") from None
    return when, tx_id


def _identifier_ids():
    """Ids of the requests that have ``:q`` as an identifier, in any case: one indexed
    equality each, as for the desk's scans.  ``:q_cases``: ``q`` and ``q`` upper case, as
    our ids are (new_public_id), for staff typing them in lower case."""
    tx, at, rb = t.transactions, t.attempts, t.request_barcodes
    q = func.lower(bindparam("q", type_=String))
    return union(
        select(tx.c.id).where(tx.c.public_id.in_(bindparam("q_cases", expanding=True))),
        select(tx.c.id).where(func.lower(tx.c.requesting_request_id) == q),
        select(tx.c.id).where(func.lower(tx.c.supplying_request_id) == q),
        select(tx.c.id).where(func.lower(tx.c.patron_id) == q),
        select(at.c.transaction_id).where(func.lower(at.c.requesting_request_id) == q),
        select(rb.c.transaction_id).where(func.lower(rb.c.barcode) == q),
    )


def _fts_match(words: list[str]):
    """FTS5's MATCH for titles holding every word, the last one as a prefix; each word
    quoted, so that no query syntax gets in."""
    match = " ".join([*(f'"{w}"' for w in words[:-1]), f'"{words[-1]}"*'])
    return literal_column("transactions_fts").op("MATCH")(literal(match))


def _ts_match(words: list[str], *, prefix: bool, indexed: bool = True,
              starting: list[str] | None = None):
    """PostgreSQL: titles holding every word, the last one as a prefix if ``prefix``;
    through the GIN index, or (``indexed=False``) tested row by row.  ``starting``: the
    title words the last one starts (:func:`_words_starting`), read whole instead."""
    tx = t.transactions
    # The same expression as the index ix_transactions_title_words, so that it is used;
    # title || '' is not that expression, so that it is not.
    title = tx.c.title if indexed else tx.c.title.op("||")(literal_column("''"))
    document = func.to_tsvector(literal_column("'simple'"),
                                func.coalesce(title, literal_column("''")))
    if not starting:
        terms = [*words[:-1], f"{words[-1]}:*" if prefix else words[-1]]
        return document.op("@@")(func.to_tsquery(literal_column("'simple'"), " & ".join(terms)))
    # Lexemes as they are stored, quoted for tsquery's input rather than parsed again
    # (to_tsquery reads "winter-garden" as a phrase of three words, and a quote as syntax).
    last = cast(literal(" | ".join(_quoted_lexeme(w) for w in starting)), TSQUERY)
    if len(words) > 1:
        last = func.to_tsquery(literal_column("'simple'"), " & ".join(words[:-1])).op("&&")(last)
    return document.op("@@")(last)


def _quoted_lexeme(lexeme: str) -> str:
    escaped = lexeme.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


_WORDS_STARTING = text(
    "SELECT lexeme FROM title_lexemes WHERE lexeme >= :word AND lexeme < :past"
    # The word is one lexeme as to_tsquery reads it (not "a_b", read as two words).
    " AND tsvector_to_array(to_tsvector('simple', :word)) = ARRAY[CAST(:word AS text)]"
    " ORDER BY lexeme LIMIT :n")


async def _words_starting(conn: AsyncConnection, word: str) -> list[str] | None:
    """PostgreSQL: the title words (``title_lexemes``, migration 0006) that ``word``
    starts, if at most STARTING_LIMIT; else, or when there are none, None (its prefix
    is then read as such: a prefix no title word has costs nothing to read).  In byte
    order, the words ``word`` starts are those from it up to, not including, it with
    its last character the next one."""
    after = ord(word[-1]) + 1
    if after > 0x10FFFF or 0xD800 <= after <= 0xDFFF:
        return None
    past = word[:-1] + chr(after)
    found = (await conn.execute(_WORDS_STARTING, {
        "word": word, "past": past, "n": STARTING_LIMIT + 1})).scalars().all()
    return list(found) if 0 < len(found) <= STARTING_LIMIT else None


def _title_test(words: list[str]):
    """PostgreSQL: titles holding every word, the last one as a prefix, tested row by row:
    first, cheaply, that each run of letters and digits 0-9 of each word is in the
    lower-cased title (PostgreSQL's parser splits words at any other character, ``_``
    included, so each run is in every matching title; and none holds LIKE's ``%``, ``_``
    or ``\\``), then by full text.  PostgreSQL tests the cheaper clauses first.
    ``lower(title) LIKE lower(...)`` is ILIKE without lower-casing the pattern on each
    row (~0.4 against ~0.3 us a row)."""
    title = func.lower(t.transactions.c.title)
    runs = "".join(c if c.isalpha() or "0" <= c <= "9" else " " for c in " ".join(words))
    return and_(*(title.like(func.lower(literal(f"%{run}%"))) for run in runs.split()),
                _ts_match(words, prefix=True, indexed=False))


def _title_globs(words: list[str], matches):
    """SQLite: titles holding every word, the last one as a prefix, tested row by row
    without ``matches``, the set of all of them FTS5 builds first (~10 ms per 100,000),
    for titles of ASCII characters only.  Those are tested by GLOB: FTS5's tokenizer
    (unicode61) makes words of the runs of ASCII letters and digits, lower-cased, so a
    word is one between two characters that are neither (the title padded with
    spaces).  Other titles are tested against ``matches``, built at the first of them:
    their characters may be folded (``remove_diacritics``), and FTS5 looking one title
    up costs ~45 us a whole word, ~2.5 ms a prefix.  None for a word other than ASCII
    letters and digits, which FTS5 may split."""
    if not all(w.isascii() and w.isalnum() for w in words):
        return None
    title = func.coalesce(t.transactions.c.title, literal_column("''"))
    padded = literal_column("' '").op("||")(func.lower(title)).op("||")(literal_column("' '"))
    globs = [padded.op("GLOB")(literal(f"*[^a-z0-9]{w}[^a-z0-9]*")) for w in words[:-1]]
    globs.append(padded.op("GLOB")(literal(f"*[^a-z0-9]{words[-1]}*")))
    # Characters as many as bytes in UTF-8: ASCII only.
    ascii_only = func.length(title) == func.length(cast(title, LargeBinary))
    return case((ascii_only, and_(*globs)), else_=matches)


def _streamed_matches(role: str, words: list[str]):
    """SQLite: the ids and statuses of ``role``'s titles holding ``words``, read from FTS5 one
    match at a time, newest (highest rowid) first, so that counting up to COUNT_LIMIT
    stops there, where ``id IN (...)`` first builds the whole match set (~10 ms per
    100,000); the ids read say how common the words are among the newest requests.
    ``rowid + 0`` keeps FTS5 from being the inner table, looked up per row (~35 us each)."""
    tx = t.transactions
    return (select(tx.c.id, tx.c.status)
            .select_from(_FTS.join(tx, tx.c.id == _FTS.c.rowid + literal_column("0")))
            .where(role_clause(role, few=True), _fts_match(words))
            .order_by(_FTS.c.rowid.desc()))


@dataclass(frozen=True)
class _Matches:
    """The requests ``q`` names: ``read``, the clause to read them through an index
    (few of them); ``each_row``, to test each row walked (many); ``streamed``, their
    ids and statuses as FTS5 reads them (SQLite's title words); ``common``: PostgreSQL's
    statistics say they are better counted walking the list; ``title_words``: ``q``
    is read as title words, not an identifier; ``whole_words``, PostgreSQL: a cheaper
    read of some of them, the last word whole rather than as a prefix starting too
    many title words (below); ``by_title``, SQLite: ``each_row`` by each title's
    characters where it can (:func:`_title_globs`)."""

    read: Any
    each_row: Any
    streamed: Any = None
    common: bool = False
    title_words: bool = True
    whole_words: Any = None
    by_title: Any = None


async def _word_shares(conn: AsyncConnection) -> dict[str, float] | None:
    """PostgreSQL: the most common title words and the share of titles holding each,
    from the statistics ANALYZE keeps on ix_transactions_title_words's expression; None
    before there are any.  Read again after :data:`STATS_SECONDS`."""
    key, now = conn.engine.url, time.monotonic()
    if (kept := _word_stats.get(key)) and kept[0] > now:
        return kept[1]
    row = (await conn.exec_driver_sql(
        "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats"
        " WHERE schemaname = current_schema()"
        " AND tablename = 'ix_transactions_title_words'")).first()
    # The frequencies end with a few more (their minimum, maximum...), which zip leaves.
    shares = dict(zip(row[0], row[1])) if row and row[0] else None
    _word_stats[key] = now + STATS_SECONDS, shares
    return shares


def _share(shares: dict[str, float], word: str, *, prefix: bool) -> float:
    """The estimated share of titles holding ``word`` (as a prefix: any word it starts);
    a word not among the most common is rare; a prefix of one or two letters is not."""
    if not prefix:
        return shares.get(word, 0.0)
    if len(word) <= 2:
        return 1.0
    return min(1.0, sum(f for lexeme, f in shares.items() if lexeme.startswith(word)))


async def _q_clauses(conn: AsyncConnection, role: str, q: str) -> _Matches:
    """The requests ``q`` identifies, else those whose titles hold its words."""
    tx = t.transactions
    values = {"q": q, "q_cases": sorted({q, q.upper()})}
    if (await conn.execute(_IDENTIFIED, {"role": role, **values})).first():
        ids = tx.c.id.in_(_IDENTIFIER_IDS.params(values))
        return _Matches(ids, ids, title_words=False)
    words = _WORD.findall(q.casefold())
    if not words:
        return _Matches(false(), false())
    if conn.dialect.name == "sqlite":
        match = tx.c.id.in_(select(_FTS.c.rowid).where(_fts_match(words)))
        return _Matches(match, match, streamed=_streamed_matches(role, words),
                        by_title=_title_globs(words, match))
    # The planner overestimates prefix matches and starts parallel workers, which take
    # longer to start than the whole index read (~20 ms against ~3 ms at 1M); a plan it
    # thinks costly is compiled by JIT (~15 ms).  It also underestimates the matches of
    # the row by row test, so that it would rather sort all the role's rows than walk
    # the list's index (~900 ms against ~12 ms); where the matches are read instead, no
    # index is in list order (role_clause), so they are sorted all the same.
    await conn.exec_driver_sql(
        "SELECT set_config('max_parallel_workers_per_gather', '0', true),"
        " set_config('jit', 'off', true), set_config('enable_sort', 'off', true)")
    each_row = _title_test(words)
    shares = await _word_shares(conn)
    if shares is None:
        starting = await _words_starting(conn, words[-1])
        return _Matches(_ts_match(words, prefix=True, starting=starting), each_row)
    last = len(words) - 1
    share = [_share(shares, w, prefix=i == last) for i, w in enumerate(words)]
    joint = math.prod(share)
    rows = sum((await _counted_facets(conn, role)).values()) if joint else 0
    # WALK_COST x COUNT_LIMIT / joint (rows walked) < joint x rows (matches read)
    common = joint * joint * rows > WALK_COST * COUNT_LIMIT
    rarest = share.index(min(share))
    if len(words) == 1 or share[rarest] * rows > RAREST_ALONE * COUNT_LIMIT:
        # Every word through GIN: its AND reads no more rows than the matches.
        if common:  # walked: not read through GIN
            return _Matches(_ts_match(words, prefix=True), each_row, common=True)
        starting = await _words_starting(conn, words[-1])
        whole = None if starting else _whole_words(words, shares, share[last], rows)
        return _Matches(_ts_match(words, prefix=True, starting=starting), each_row,
                        whole_words=whole)
    # A rare word and others: its few matches read, each tested for the others.
    read = _ts_match([words[rarest]], prefix=rarest == last)
    return _Matches(and_(read, each_row), each_row, common=common)


def _whole_words(words: list[str], shares: dict[str, float], last_share: float, rows: int):
    """PostgreSQL: the titles holding every word, the last one whole, when the statistics
    say that they are more than COUNT_LIMIT among ``rows`` and that the last word as a
    prefix (``last_share``) is in many titles; else None.  Two common words at 1M
    requests: ~9 against ~35 ms through GIN.  (Three, the last one tested on each
    title holding the others whole, were no faster: ~7,000 titles read at random.)"""
    whole = math.prod(shares.get(w, 0.0) for w in words) * rows
    if last_share * rows > RAREST_ALONE * COUNT_LIMIT and whole > 2 * COUNT_LIMIT:
        return _ts_match(words, prefix=False)
    return None


def role_clause(role: str, *, few: bool):
    """``role = :role``; with few matches, as an expression no index can serve: else the
    planner may walk the role's (updated_at, id) index testing every row against the
    matches (SQLite always, PostgreSQL when it misjudges the words' cost), when looking
    the matches up and sorting them is far cheaper."""
    role_column = t.transactions.c.role
    return (role_column.op("||")(literal_column("''")) if few else role_column) == role


#: Built once, given their values when run: built for each search, they took ~0.5 ms of
#: its CPU, more than a desk's scan takes in the database.
_IDENTIFIER_IDS = _identifier_ids()
_IDENTIFIED = select(t.transactions.c.id).where(
    role_clause(bindparam("role"), few=True), t.transactions.c.id.in_(_IDENTIFIER_IDS)).limit(1)


_COUNTED_FACETS = (select(t.status_counts.c.status, func.sum(t.status_counts.c.n).label("n"))
                   .where(t.status_counts.c.role == bindparam("role"))
                   .group_by(t.status_counts.c.status))


async def _counted_facets(conn: AsyncConnection, role: str) -> dict[str, int]:
    rows = await conn.execute(_COUNTED_FACETS, {"role": role})
    return {r.status: int(r.n) for r in rows if r.n}


async def _facets_of_matches(conn: AsyncConnection, matches, some=None
                             ) -> tuple[dict[str, int], list[int]]:
    """Requests per status among ``matches`` (a select of ids and statuses), read up to
    COUNT_LIMIT + 1, and the ids read: all of them if no more than COUNT_LIMIT, so that
    a page of them need not look them up again (a second read of the words' index).
    ``some``: a select of some of the matches, cheaper to read, read first: if it finds
    more than COUNT_LIMIT, so would ``matches``, and its facets stand for theirs."""
    for read in (some, matches):
        if read is not None:
            rows = (await conn.execute(read.limit(COUNT_LIMIT + 1))).all()
            if len(rows) > COUNT_LIMIT:
                break
    return dict(Counter(r.status for r in rows)), [r.id for r in rows]


async def _walked_by_title(conn: AsyncConnection, newest: list[int], walked: int) -> bool:
    """SQLite: whether walking the list for ``walked`` matches, each row's title tested
    (:func:`_title_globs`), costs less than FTS5 building the set of all of them,
    estimated from ``newest``, the ids of the newest matches (more than COUNT_LIMIT),
    as ids are given in order: the requests stored since the oldest of them, per
    match, are the rows walked per match (a word common years ago and not since is
    rare at the top of the list); all the requests stored, over that, the matches.
    A common word (1 title in 10, 1M requests): ~8 against ~17 ms; two (1 in 140):
    ~35 against ~15 ms, so the set."""
    stored = (await conn.execute(select(func.max(t.transactions.c.id)))).scalar_one()
    gap = (stored - min(newest) + 1) / len(newest)
    return walked * gap * TITLE_TEST_COST < stored / gap


async def search(conn: AsyncConnection, role: str, *, status: str | None = None,
                 partner: str | None = None, q: str | None = None,
                 needs_attention: bool | None = None, limit: int = 50, offset: int = 0,
                 cursor: str | None = None, extra: tuple | list = (),
                 ) -> dict[str, Any]:
    """One page of ``role``'s requests, newest first, with facet counts by status.

    ``extra``: more WHERE clauses from a side's own filters (lending_repo.search_filters),
    or :class:`Identifies`.
    ``cursor``: the ``next`` of the previous page. The answer: ``requests``, ``next``
    (None on the last page), ``facets`` and ``total`` (exact unless ``total_exact`` is
    false: a search with more than COUNT_LIMIT matches).
    """
    tx = t.transactions
    after = decode_cursor(cursor) if cursor else None
    identified = any(isinstance(e, Identifies) for e in extra)
    where = [tx.c.id.in_(e.ids) if isinstance(e, Identifies) else e for e in extra]
    if partner:
        # Served, in list order, by the index (lower(partner), role, updated_at, id).
        where.append(same_text(tx.c.partner, partner))
    if needs_attention is not None:
        where.append(tx.c.needs_attention == needs_attention)
    q = (q or "").strip()
    # Whether the page looks the matches up and sorts them (few of them), rather than
    # walking the list's index in order.
    few = identified
    if not q and not where:
        facets, exact = await _counted_facets(conn, role), True
    elif not q:
        facets, ids = await _facets_of_matches(conn, select(tx.c.id, tx.c.status).where(
            role_clause(role, few=identified), *where))
        exact = len(ids) <= COUNT_LIMIT
    else:
        found = await _q_clauses(conn, role, q)
        # Few requests need attention (a work queue, with its own index in list order):
        # walking them, each title tested, costs less than reading a word's matches
        # through the words' index.
        queue = bool(needs_attention) and found.title_words
        some = None
        if (found.common or queue) and not identified:
            # The first matches in list order, walking it.
            matches = (select(tx.c.id, tx.c.status)
                       .where(role_clause(role, few=False), found.each_row, *where)
                       .order_by(tx.c.updated_at.desc(), tx.c.id.desc()))
        elif found.streamed is not None and not where:
            # Reading stops at COUNT_LIMIT, so it may start from the matches as FTS5
            # reads them, unless another filter may name fewer requests.
            matches = found.streamed
        else:
            few_of = (role_clause(role, few=True), *where)
            matches = select(tx.c.id, tx.c.status).where(found.read, *few_of)
            if found.whole_words is not None:
                some = select(tx.c.id, tx.c.status).where(found.whole_words, *few_of)
        facets, ids = await _facets_of_matches(conn, matches, some)
        exact = len(ids) <= COUNT_LIMIT
        if exact:  # all of them counted: the page takes them by id, not tested again
            where.append(tx.c.id.in_(ids))
        elif matches is found.streamed and found.by_title is not None and (
                await _walked_by_title(conn, ids, offset + limit + 1)):
            where.append(found.by_title)
        else:
            where.append(found.each_row)
        few = identified or exact
    where.insert(0, role_clause(role, few=few))
    if status:
        where.append(tx.c.status == status)
    if after:
        at, tx_id = after
        where.append(tuple_(tx.c.updated_at, tx.c.id)
                     < tuple_(literal(at, tx.c.updated_at.type), literal(tx_id, tx.c.id.type)))
    rows = (await conn.execute(select(*_LISTED).where(and_(*where))
                               .order_by(tx.c.updated_at.desc(), tx.c.id.desc())
                               .limit(limit + 1).offset(offset))).all()
    page = rows[:limit]
    more = len(rows) > limit and page
    return {
        "total": facets.get(status, 0) if status else sum(facets.values()),
        "total_exact": exact,
        "facets": facets,
        "requests": [row_view(r) for r in page],
        "next": encode_cursor(page[-1].updated_at, page[-1].id) if more else None,
    }
