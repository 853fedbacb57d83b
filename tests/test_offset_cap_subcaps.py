"""Offset cap changes keep the sub-caps unless told otherwise: ``PUT .../cap`` (and its
what-if) without ``sub_caps_pct`` keeps the sub-caps in force when the change takes effect, an
explicit ``{}`` clears them; and percentages are written in plain ASCII digits only."""

from __future__ import annotations

import pytest

from exchange.core.units import UnitError, percent_to_bps

from test_server import OPERATOR, op, running_server

CAP = "/compliance/periods/2026/cap"
DEMO_SUBS = {"PHCER": "2.00", "RME": "3.00", "RMN": "3.00"}  # as the API answers: percent
BAD_FORMATS = ["5_0", "1e2", "\u0665", "\uff15", "-0", "5\n", " 5", "+5", "5.", ".5", ""]


@pytest.mark.parametrize("text", BAD_FORMATS)
def test_a_percentage_in_another_format_is_refused(text):
    with pytest.raises(UnitError):
        percent_to_bps(text)


def test_plain_percentages_parse():
    assert [percent_to_bps(t) for t in ("5", "0.5", "0.25", "100", "0")] == [500, 50, 25, 10_000, 0]


async def test_omitted_sub_caps_are_kept_and_an_empty_object_clears_them(tmp_path):
    async with running_server(tmp_path) as srv:
        status, c = await op(srv, "GET", CAP)
        assert status == 200 and c["sub_caps_pct"] == DEMO_SUBS
        # the what-if of a cap alone previews the sub-caps as they are
        status, wi = await op(srv, "POST", CAP + "/what-if", {"cap_pct": "6"})
        assert status == 200 and wi["proposed_sub_caps_pct"] == DEMO_SUBS
        status, wi = await op(srv, "POST", CAP + "/what-if", {"cap_pct": "6", "sub_caps_pct": {}})
        assert status == 200 and wi["proposed_sub_caps_pct"] == {}
        status, r = await op(srv, "PUT", CAP, {"cap_pct": "6"})
        assert status == 200, r
        status, c = await op(srv, "GET", CAP)
        assert c["cap_pct"] == "6.00" and c["sub_caps_pct"] == DEMO_SUBS
        assert c["history"][-1]["sub_caps_pct"] == DEMO_SUBS
        # a lower cap keeps the sub-caps, each at most the new cap
        status, r = await op(srv, "PUT", CAP, {"cap_pct": "2.5"})
        assert status == 200, r
        status, c = await op(srv, "GET", CAP)
        assert c["sub_caps_pct"] == {"PHCER": "2.00", "RME": "2.50", "RMN": "2.50"}
        status, r = await op(srv, "PUT", CAP, {"cap_pct": "6", "sub_caps_pct": {"PHCER": "1"}})
        assert status == 200, r
        status, c = await op(srv, "GET", CAP)
        assert c["sub_caps_pct"] == {"PHCER": "1.00"}
        status, r = await op(srv, "PUT", CAP, {"cap_pct": "6", "sub_caps_pct": {}})
        assert status == 200, r
        status, c = await op(srv, "GET", CAP)
        assert c["cap_pct"] == "6.00" and c["sub_caps_pct"] == {}
        for text in BAD_FORMATS:
            for body in ({"cap_pct": text}, {"cap_pct": "5", "sub_caps_pct": {"PHCER": text}}):
                status, r = await op(srv, "PUT", CAP, body)
                assert status == 422 and r["error"]["code"] == "INVALID_PARAMS", (text, r)
        # the contract says so
        status, doc = await op(srv, "GET", "/openapi.json", key=OPERATOR)
        assert status == 200
        desc = doc["components"]["schemas"]["CapBody"]["properties"]["sub_caps_pct"]["description"]
        assert "Omitted" in desc and "{} clears" in desc


async def test_a_cap_out_of_range_is_explained_in_percent(tmp_path):
    async with running_server(tmp_path) as srv:
        for path, method in ((CAP + "/what-if", "POST"), (CAP, "PUT")):
            status, r = await op(
                srv, method, path, {"cap_pct": "8", "sub_caps_pct": {"PHCER": "9"}}
            )
            assert status == 400 and r["error"]["code"] == "CAP_OUT_OF_RANGE", r
            msg = r["error"]["message"]
            assert "9 %" in msg and "8 %" in msg and "bps" not in msg, msg
