"""Strict paged listings (clients/ais.py), with and without asking for the next page ahead."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais, ListingError


class Page:
    def __init__(self, entries: list[str], token: str) -> None:
        self.entries, self.continuation_token, self.uuid = entries, token, "u"


def listing(monkeypatch: pytest.MonkeyPatch, pages: dict[str, Page]) -> list[str]:
    asked: list[str] = []

    def page(bck: Any, prefix: str, props: str, size: int, uuid: str, token: str, flags: Any) -> Page:
        asked.append(token)
        return pages[token]

    monkeypatch.setattr(Ais, "_list_page", staticmethod(page))
    return asked


@pytest.mark.parametrize("ahead", [False, True])
def test_pages_come_in_order_until_the_empty_token(monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    asked = listing(monkeypatch, {"": Page(["a", "b"], "t1"), "t1": Page([], "t2"), "t2": Page(["c"], "")})
    pages = list(Ais("http://127.0.0.1:9").list_pages("b", ahead=ahead))
    assert pages == [["a", "b"], ["c"]] and asked == ["", "t1", "t2"]


@pytest.mark.parametrize("ahead", [False, True])
def test_a_listing_that_does_not_advance_is_refused(monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    listing(monkeypatch, {"": Page(["a"], "t1"), "t1": Page([], "t1")})
    with pytest.raises(ListingError, match="does not advance"):
        list(Ais("http://127.0.0.1:9").list_pages("b", ahead=ahead))


def test_a_consumer_that_stops_early_leaves_no_request_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = listing(monkeypatch, {"": Page(["a"], "t1"), "t1": Page(["b"], "t2"), "t2": Page(["c"], "")})
    pages = Ais("http://127.0.0.1:9").list_pages("b", ahead=True)
    assert next(pages) == ["a"]
    pages.close()  # type: ignore[attr-defined]
    assert asked[:2] == ["", "t1"] and len(asked) <= 2
