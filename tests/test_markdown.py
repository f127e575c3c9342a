"""Alert text in Pachca markdown: it reads as written, and nothing in it takes effect as markup,
whether or not Pachca honours backslash escapes. Held to tests/pachca_markdown.py, a reference
parser of Pachca's documented subset."""

from hypothesis import given
from hypothesis import strategies as st

from bridge.markdown import LOOKALIKES, code, escape, link
from bridge.model import Alert, AlertStatus
from bridge.render import render_message
from tests.pachca_markdown import kinds, parse, visible
from tests.test_render import NOW, ROUTE, UTC_OPTIONS, incident_from, note_with

# text rich in what could form markup, and in what must be left alone
MARKUPISH = "*_~`[]()<>@\\!#|-:/ \n"
alert_text = st.text(
    alphabet=st.sampled_from(MARKUPISH)
    | st.sampled_from("abc1")
    | st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(LOOKALIKES.values()) + "\u200b",
    ),
    max_size=40,
)
READ_BACK = {look: char for char, look in LOOKALIKES.items()}


def read(text: str) -> str:
    """What a reader takes the shown text for: look-alikes read as what they stand for."""
    return "".join(READ_BACK.get(c, c) for c in visible(text))


def test_the_reference_parser_sees_every_construct_of_the_subset() -> None:
    """Not vacuous: each documented construct is found, and the old backslash escaping counts
    as an effect (an engine that honours it drops the backslash, one that does not shows it)."""
    assert kinds("**b** *i* __b__ _i_ ~~s~~") == ["bold", "italic", "bold", "italic", "strike"]
    assert kinds("see [docs](http://x) and <http://y>") == ["link", "autolink"]
    assert kinds("`code` and\n```\nfence\n```\n") == ["code", "fence"]
    assert kinds("@dba_oncall <@42>") == ["mention", "mention"]
    assert kinds("node\\_exporter") == ["escape"]
    assert kinds("node_exporter, lag > 30s (5m) # - | 2 * 3") == []


def test_ordinary_text_keeps_its_characters() -> None:
    for text in (
        "node_exporter lag > 30s (5m)",
        "rate(http_requests_total[5m]) * 100 > 5",
        "# of pods - 3 | see C:\\temp",
        "~5m of lag",
    ):
        assert escape(text) == text


def test_what_could_form_markup_is_neutralised_and_still_reads_the_same() -> None:
    text = "*all* __init__ ~~old~~ `htop` [x](http://evil) <@1> @dba_oncall \\[raw]"
    shown = escape(text)
    assert parse(shown) == []
    assert read(shown) == text
    assert "\\_" not in shown and "\\*" not in shown  # no backslashes added


@given(alert_text)
def test_property_no_alert_text_takes_effect_and_all_of_it_reads_as_written(text: str) -> None:
    shown = escape(text)
    assert parse(shown) == [], (text, shown)
    assert read(shown) == text


@given(alert_text)
def test_property_alert_text_cannot_break_out_of_the_templates_markup(text: str) -> None:
    """Inside the template's bold, link text or beside its code spans, alert text changes
    no construct of the template's."""
    word = "x"
    text = text.strip() or word  # the templates strip what they wrap in bold
    for wrap in ("**{}**", "{} `code` {}", "**{}** · {}", "_{}_"):
        assert kinds(wrap.format(*[escape(text)] * wrap.count("{}"))) == kinds(
            wrap.format(*[word] * wrap.count("{}"))
        ), (wrap, text)
    assert kinds(link(text, "https://example.com/a")) == kinds(link(word, "https://e.com/"))
    assert kinds(code(text)) == ["code"]


@given(alert_text, alert_text)
def test_property_a_whole_message_has_the_templates_structure_whatever_the_alert_says(
    summary: str, value: str
) -> None:
    def message(summary: str, value: str) -> str:
        alert = Alert(
            fingerprint="0000000000000001",
            status=AlertStatus.FIRING,
            labels={"alertname": "Evil", "instance": value or "i"},
            annotations={"summary": summary or "s", "description": summary + " more"},
            starts_at=NOW,
        )
        return render_message(incident_from(note_with(alert)), ROUTE, UTC_OPTIONS).content

    assert kinds(message(summary, value)) == kinds(message("plain", "plain"))
