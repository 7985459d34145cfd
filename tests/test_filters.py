import pytest

from retrieval.errors import InputError
from retrieval.filters import compile_where

COLS = {"speaker": "VARCHAR", "take": "BIGINT", "label": "VARCHAR", "duration_s": "DOUBLE", "path": "VARCHAR"}


def test_values_become_parameters_and_columns_are_quoted():
    f = compile_where("speaker != 'george' AND take >= 10", COLS)
    assert f.sql == "(f.\"speaker\" != ? AND f.\"take\" >= ?)"
    assert f.params == ("george", 10)


def test_in_like_null_not_or_and_parentheses():
    f = compile_where("label IN (dog, 'cat') OR NOT (duration_s < 2.5) AND path LIKE 'a/%' AND speaker IS NOT NULL",
                      COLS)
    assert "IN (?, ?)" in f.sql and "LIKE ?" in f.sql and "IS NOT NULL" in f.sql and "NOT (" in f.sql
    assert f.params == ("dog", "cat", 2.5, "a/%")


def test_text_columns_take_numbers_as_text_and_several_filters_and():
    f = compile_where(["label = 3", "take = 3"], COLS)
    assert f.params == ("3", 3) and f.sql.count(" AND ") == 1


def test_injection_is_data_not_sql():
    f = compile_where("speaker = \"x'; DROP TABLE files; --\"", COLS)
    assert f.params == ("x'; DROP TABLE files; --",) and "DROP" not in f.sql


@pytest.mark.parametrize("bad,msg", [
    ("nope = 1", "unknown column 'nope'"),
    ("speaker", "ends where"),
    ("speaker = ", "ends where"),
    ("speaker = 1 junk", "unexpected"),
    ("(speaker = 1", "expected"),
    ("speaker ; 1", "expected an operator"),
    ("speaker = 'unterminated", "cannot parse"),
])
def test_errors_say_what_is_wrong(bad, msg):
    with pytest.raises(InputError, match=msg):
        compile_where(bad, COLS)


def test_empty_is_no_filter():
    assert compile_where(None, COLS) is None and compile_where(["", " "], COLS) is None
