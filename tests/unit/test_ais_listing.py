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


def test_a_backend_refusing_ais_credentials_is_access_denied_never_missing() -> None:
    """AIS answers a GET of a remote object with 404, and a listing with 500, when S3 refuses the credentials
    AIS uses: told apart by the backend's error code, so it is never an absent object or an outage."""
    from aistore.sdk.errors import AISError, ErrObjNotFound

    from sharded_dataset_operator.clients import ais as ais_client
    from sharded_dataset_operator.clients.ais_errors import BackendDenied, unavailable

    refused = ('{"message":"aws-error[XAdminUserNotFound: No user exists with the provided access key ID '
               '(profile=\\"revoked\\")]","status":404}')  # fmt: skip
    with pytest.raises(BackendDenied, match="refused the credentials AIS uses"):
        ais_client._is_missing(ErrObjNotFound(404, refused, "http://ais/v1/objects/b/o", None))
    assert ais_client._is_missing(ErrObjNotFound(404, '{"message":"object s3://b/o does not exist"}', "u", None))
    assert isinstance(unavailable(AISError(500, refused.replace("404", "500"), "u", None)), BackendDenied)
    signature = "aws-error[SignatureDoesNotMatch: The request signature we calculated does not match]"
    assert isinstance(unavailable(AISError(500, signature, "u", None)), BackendDenied)
    assert not isinstance(unavailable(AISError(500, "aws-error[connection refused]", "u", None)), BackendDenied)
    own = AISError(503, "AccessDenied in a message of AIS itself", "u", None)
    assert not isinstance(unavailable(own), BackendDenied)
