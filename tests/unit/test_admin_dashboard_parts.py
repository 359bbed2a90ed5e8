"""The dashboard's pure parts: session cookies (forged, expired, no longer an operator's) and escaped HTML."""

from __future__ import annotations

from fedai.protocol.keys import Keys
from fedai_router.dashboard_html import bar_chart, line_chart, table
from fedai_router.dashboard_session import Sessions

NOW = 1_800_000_000.0


def test_a_session_cookie_is_accepted_only_as_issued_in_time_and_for_an_operator() -> None:
    router, operator = Keys.generate(), Keys.generate().pubkey
    sessions = Sessions(router.secret_hex, ttl_s=900)
    cookie, session = sessions.issue(operator, now=NOW)
    operators = frozenset({operator})
    assert sessions.read(cookie, operators, now=NOW + 899) == session
    assert Sessions(router.secret_hex).read(cookie, operators, now=NOW) == session  # another replica, same key
    assert sessions.read(cookie, operators, now=NOW + 901) is None  # expired
    assert sessions.read(cookie, frozenset(), now=NOW) is None  # no longer an operator
    assert Sessions(Keys.generate().secret_hex).read(cookie, operators, now=NOW) is None  # another router's
    payload, mac = cookie.split(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert sessions.read(f"{tampered}.{mac}", operators, now=NOW) is None
    assert sessions.read("", operators, now=NOW) is None and sessions.read("a.b.c", operators, now=NOW) is None
    other, _ = sessions.issue(operator, now=NOW)
    assert other != cookie  # every session has its own CSRF token


def test_cells_and_chart_labels_are_escaped() -> None:
    html = table(("a<b",), [("<script>x</script>",)])
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&lt;b" in html
    assert table(("f",), [("<form></form>",)], raw=(0,)).count("<form>") == 1
    assert "<svg" in bar_chart('"q"', [0, 3, 1], unit="req") and "&quot;q&quot;" in bar_chart('"q"', [1], unit="r")
    drawn = line_chart("ms", [None, 10.0, None, 30.0], unit="ms")
    assert drawn.count("<circle") == 2 and "<polyline" in drawn
    assert "<polyline" not in line_chart("ms", [None, None], unit="ms")
