import pytest

from bridge.matchers import MatcherSyntaxError, MatchType, parse_matcher


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('team="db"', {"team": "db"}, True),
        ('team="db"', {"team": "dbx"}, False),
        ('env!="dev"', {"env": "prod"}, True),
        ('env!="dev"', {}, True),
        ('severity=~"critical|warning"', {"severity": "warning"}, True),
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored, as in Alertmanager
        ('team!~"db|infra"', {"team": "web"}, True),
        ('team!~"db|infra"', {"team": "infra"}, False),
        ('missing=""', {}, True),  # a missing label compares as ""
        ("team=db", {"team": "db"}, True),  # unquoted value
        ('msg="say \\"hi\\""', {"msg": 'say "hi"'}, True),
    ],
)
def test_matcher_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


def test_operator_is_parsed_longest_first() -> None:
    assert parse_matcher('a=~"x"').type is MatchType.REGEX
    assert parse_matcher('a!~"x"').type is MatchType.NOT_REGEX
    assert parse_matcher('a!="x"').type is MatchType.NOT_EQUAL


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('1team="db"', "column 1: expected a label name"),
        ('team~"db"', "column 5: expected one of"),
        ('team="db', "unterminated"),
        ('team="db" x', "unexpected text after the closing quote"),
        ('team=~"("', "invalid regex"),
        ('team="a\\q"', "bad escape"),
    ],
)
def test_bad_matchers_say_where(text: str, message: str) -> None:
    with pytest.raises(MatcherSyntaxError, match=message):
        parse_matcher(text)


def test_matcher_prints_back_in_alertmanager_syntax() -> None:
    assert str(parse_matcher('a=~"x\\"y"')) == 'a=~"x\\"y"'
