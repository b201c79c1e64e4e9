"""The KQL predicate engine: a Sentinel hunting query's ``where`` predicates, evaluated per row.

Pure: no I/O. :func:`parse_query` takes a hunting query (``let`` time bounds, the table, ``where``
stages, one final ``summarize``) and returns a :class:`Query` whose :meth:`Query.matches` says
whether Kusto's ``where`` clauses would keep a row. :func:`parse_predicate` takes one predicate
(an allowlist entry). Anything outside the subset below is refused with a :class:`KqlError`
naming the file, line, column and construct (docs/architecture.md §3).

Semantics, and the Kusto documentation each decision follows
(pages under https://learn.microsoft.com/kusto/query/; the markdown sources are in
github.com/MicrosoftDocs/dataexplorer-docs, data-explorer/kusto/query/):

Terms and ``has`` (datatypes-string-operators, "What is a term?"):
  "each string value is broken into maximal sequences of alphanumeric characters, and each of
  those sequences is made into a term". Revisions of that page up to 2021 said "ASCII
  alphanumeric"; the current page drops "ASCII", so non-ASCII letters are term characters:
  ``Ü``, ``é``, ``中`` are letters like ``a``. "Alphanumeric" is taken as .NET's
  ``Char.IsLetterOrDigit``: Unicode letters (L*) and decimal digits (Nd); everything else
  (spaces, punctuation, ``_``, combining marks, ``²``) separates terms.
  ``X has N`` holds when N occurs in X starting at a term start and ending at a term end, so a
  multi-word needle is a phrase: ``has 'DWSNET OÜ'`` matches ``DWSNET OÜ Ltd`` and
  ``dwsnet OÜ`` but not ``XDWSNET OÜ`` nor ``DWSNET OÜX``. The docs do not describe needles that
  begin or end with punctuation; here such a needle carries its own boundary on that side
  (its punctuation must match literally, nothing more is required there): ``has 'PDQ.com'``
  matches ``PDQ.com, Inc.`` but not ``PDQ com`` nor ``XPDQ.com``; ``has 'Servably, Inc.'``
  matches ``Servably, Inc.`` and ``Servably, Inc.,`` but not ``Servably Inc``; ``has '.exe'``
  matches ``a.exe`` and ``a.exe.bak`` but not ``a.exec``. Equivalently: split both sides into
  terms and single separator characters; the needle's sequence occurs in the value's.
  A ``has`` needle with no letter or digit (``has ''``, ``has '-'``) is refused: Kusto documents
  no meaning for it.

Case-insensitive operators fold ASCII letters only (note on the in~, has, startswith, endswith
pages: "Case-insensitive operators are currently supported only for ASCII-text. For non-ASCII
comparison, use the tolower() function"): ``has``, ``contains``, ``startswith``, ``endswith``,
``=~``, ``!~``, ``in~``, ``has_any``, ``has_all`` fold A-Z to a-z and nothing else, so ``Ü``
matches only ``Ü``. The ``_cs`` operators, ``==``, ``!=``, ``in``, ``!in`` compare ordinally.

Nulls (scalar-data-types/null-values; logical-operators):
  ``string`` has no null ("the string type doesn't support null values"): a missing string is
  ``""``. A comparison with a null bool/long is null ("In EngineV3, the comparison expression
  returns null"). ``and``/``or`` "treat the null value as equivalent to false": ``bool(null) and
  true`` is false, ``bool(null) or true`` is true (the table on logical-operators). ``not()`` of
  null is null (undocumented; functions propagate null). ``where`` keeps only true.
  ``isempty(x)`` is true for ``""`` or null, ``isnotempty`` its negation (isempty-function,
  isnotempty-function; they take any scalar).

``matches regex`` (matches-regex-operator, regex, re2): RE2, via google-re2, compiled at parse
time, searched (not anchored), case-sensitive unless the pattern says ``(?i)``; at most 16
groups. The current regex page documents a newer syntax in which ``\\d \\w \\s \\b`` are
Unicode-aware and ``[a-z&&[^x]]``-style set operations, ``\\<``, ``\\>`` exist; RE2 reads all of
those differently, so patterns using them are refused rather than run with a different meaning.

Operators, functions, keywords, literals, tables and columns are case-sensitive, as in Kusto
("KQL is case-sensitive for everything - table names, table column names, operators, functions,
and so on", https://learn.microsoft.com/kusto/query/): ``HAS``, ``AND``, ``True``, ``signer`` are
errors. String literals follow scalar-data-types/string (see :mod:`.lexer`). Evaluation: the
operands of ``and``/``or`` are evaluated cheapest first (by the costliest column each reads),
short-circuiting, and ``get`` is called at most once per column per evaluation.
"""

from .errors import KqlError
from .model import Predicate, Query
from .parser import TABLES, parse_predicate, parse_query

__all__ = ["TABLES", "KqlError", "Predicate", "Query", "parse_predicate", "parse_query"]
