"""One store per bucket and settings for the log archives (``trainrun.storage.stores.shared_store``): the archives
of runs in one bucket share a client and differ by where their keys begin; another bucket, other settings or a
local directory get their own, and a process keeps a bounded number. Stores are lazy: nothing is contacted here."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun.base.uri import parse_uri
from trainrun.storage import StorageOptions, stores
from trainrun.storage.stores import SHARED_STORES, shared_store

OPTIONS = StorageOptions(endpoint_url="https://s3.example.invalid", access_key_id="key", secret_access_key="secret")


def test_locations_in_one_bucket_share_a_store_and_differ_by_their_root() -> None:
    first = shared_store(parse_uri("s3://shared-bucket/runs/a/logs"), OPTIONS)
    second = shared_store(parse_uri("s3://shared-bucket/runs/b/logs"), OPTIONS)
    whole = shared_store(parse_uri("s3://shared-bucket"), OPTIONS)
    assert first.store is second.store is whole.store
    assert (first.root, second.root, whole.root) == ("runs/a/logs/", "runs/b/logs/", "")


def test_another_bucket_or_other_settings_get_a_store_of_their_own() -> None:
    base = shared_store(parse_uri("s3://bucket-one/a"), OPTIONS).store
    assert shared_store(parse_uri("s3://bucket-two/a"), OPTIONS).store is not base
    rotated = StorageOptions(endpoint_url=OPTIONS.endpoint_url, access_key_id="key", secret_access_key="rotated")
    assert shared_store(parse_uri("s3://bucket-one/a"), rotated).store is not base


def test_a_local_directory_gets_its_own_store_rooted_there(tmp_path: Path) -> None:
    location = parse_uri((tmp_path / "logs").as_uri())
    rooted = shared_store(location, StorageOptions(), create_local_dir=True)
    assert rooted.root == "" and (tmp_path / "logs").is_dir()
    assert shared_store(location, StorageOptions()).store is not rooted.store


def test_a_process_keeps_a_bounded_number_the_least_recently_opened_going_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "_shared", type(stores._shared)())
    kept = shared_store(parse_uri("s3://bucket-0/x"), OPTIONS).store
    for index in range(1, SHARED_STORES + 5):
        shared_store(parse_uri(f"s3://bucket-{index}/x"), OPTIONS)
        shared_store(parse_uri("s3://bucket-0/y"), OPTIONS)  # used again: stays
    assert len(stores._shared) == SHARED_STORES
    assert shared_store(parse_uri("s3://bucket-0/z"), OPTIONS).store is kept
    assert all(bucket.bucket != "bucket-1" for bucket, _ in stores._shared)
