"""The client-side write guard of PostgreSQL targets: a declared query must be one read
statement, with no keyword or function that writes or signals. The server's read-only
transaction is the second line; this one refuses before anything is sent. Split from
:mod:`opsverify.targets.postgres`, whose client calls :func:`refuse_writes`."""

from __future__ import annotations

import re

from opsverify.errors import WriteRefused

READ_ONLY_VERBS = frozenset({"select", "with", "show", "explain", "values", "table"})


# Functions with side effects that a SELECT can call; a read-only transaction does not stop
# all of them (signalling backends, configuration, advisory locks, WAL and log control).
SIDE_EFFECT_FUNCTIONS = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|set_config|pg_reload_conf|pg_rotate_logfile"
    r"|pg_switch_wal|pg_create_restore_point|pg_promote|pg_wal_replay_pause"
    r"|pg_wal_replay_resume|pg_advisory_\w*|pg_try_advisory_\w*|pg_notify|nextval|setval"
    r"|lo_\w+|dblink\w*|pg_file_\w+|pg_stat_reset\w*|pg_sleep\w*)\s*\(",
    re.IGNORECASE,
)


# Keywords that change data or schema anywhere in a statement (a data-modifying CTE hides
# DELETE behind WITH); SELECT ... FOR UPDATE/SHARE takes row locks.
WRITE_KEYWORDS = re.compile(
    r"\b(insert|update|delete|merge|truncate|drop|alter|create|grant|revoke|copy|vacuum"
    r"|cluster|reindex|lock|call|refresh|notify)\b",
    re.IGNORECASE,
)


def refuse_writes(sql: str) -> None:
    """Client-side guard: only single read statements leave a read-only client.

    The statement is read without its string literals, quoted identifiers and comments, so
    neither ``'--'`` nor ``/* */`` can hide a second statement or a side effect.
    """
    code = _code_only(sql).strip().rstrip(";").strip()
    verb = code.split(None, 1)[0].lower() if code else ""
    if verb not in READ_ONLY_VERBS:
        raise WriteRefused(
            f"refusing to send {verb.upper() or 'an empty statement'} from a non-destructive "
            "check (read-only: SELECT, WITH, SHOW, EXPLAIN, VALUES, TABLE)"
        )
    if ";" in code:
        raise WriteRefused("refusing to send several statements from a non-destructive check")
    keyword = WRITE_KEYWORDS.search(code if verb != "show" else "")
    if keyword:
        raise WriteRefused(f"refusing {keyword.group(1).upper()} inside a statement from a "
                           "non-destructive check")
    effect = SIDE_EFFECT_FUNCTIONS.search(code)
    if effect:
        raise WriteRefused(f"refusing {effect.group(1)}() from a non-destructive check: it "
                           "changes server state")


_LEXEMES = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<literal>[eE]?'(?:[^']|'')*'(?!')|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    | (?P<ident>"(?:[^"]|"")*")
    """,
    re.S | re.X,
)


def _code_only(sql: str) -> str:
    """``sql`` with comments removed and literals and quoted identifiers blanked."""
    def blank(match: re.Match[str]) -> str:
        return " " if match.lastgroup == "comment" else " _ "

    return _LEXEMES.sub(blank, sql)
