"""S3 prefixes against a real S3-compatible server (moto_server over HTTP on 127.0.0.1)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ingest_helpers import (  # noqa: F401 - fixtures
    FAKE_SECRET_KEY,
    free_port,
    aws_credentials,
    manifest_by_source,
    report,
    s3_endpoint,
    serial_options,
    tree_bytes,
)

import preprocessing.sources as sources
from preprocessing.errors import IngestError
from preprocessing.folders import ingest_street
from preprocessing.sources import S3Options, UnreadableSource, list_s3, parse_s3_uri, s3_client


@pytest.fixture
def street_bucket(s3_endpoint: str, aws_credentials: None, shared_data: Path) -> str:
    """A fresh bucket holding the real gta2city frames under street/gta/ and street/city/, plus decoys."""
    bucket = f"ingest-{uuid.uuid4().hex[:12]}"
    client = s3_client(S3Options(endpoint_url=s3_endpoint))
    client.create_bucket(Bucket=bucket)
    for domain, folder in (("gta", "gta"), ("city", "cityscapes")):
        for path in sorted((shared_data / "street" / "gta2city" / folder).iterdir()):
            client.put_object(Bucket=bucket, Key=f"street/{domain}/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key="street/gta/", Body=b"")  # "folder" marker some tools create
    client.put_object(Bucket=bucket, Key="street/gta/notes.txt", Body=b"not an image")
    client.put_object(Bucket=bucket, Key="street/gtaextra/00001.jpg", Body=b"must not match prefix street/gta/")
    return bucket


def count_list_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    real_client = sources.s3_client

    def spying_client(options: S3Options) -> Any:
        client = real_client(options)
        client.meta.events.register("before-parameter-build.s3.ListObjectsV2", lambda params, **_: calls.append(params))
        return client

    monkeypatch.setattr(sources, "s3_client", spying_client)
    return calls


def test_street_from_s3_with_pagination(
    street_bucket: str, s3_endpoint: str, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    list_calls = count_list_calls(monkeypatch)
    options = serial_options(s3=S3Options(endpoint_url=s3_endpoint, page_size=2))
    out = tmp_path / "from_s3"
    ingest_street({"gta": f"s3://{street_bucket}/street/gta", "city": f"s3://{street_bucket}/street/city/"}, out, options=options)

    assert report(out)["counts"] == {"city": {"train": 5}, "gta": {"train": 5}}
    assert len(list_calls) >= 3 + 3, "6 objects under street/gta/ at 2 per page, 5 under street/city/"
    assert all(call["MaxKeys"] == 2 for call in list_calls)
    assert f"s3://{street_bucket}/street/gta/00001.jpg" in manifest_by_source(out)
    assert [item["source"] for item in report(out)["rejected"]] == [f"s3://{street_bucket}/street/gta/notes.txt"]

    local = tmp_path / "from_disk"
    street = shared_data / "street" / "gta2city"
    ingest_street({"gta": str(street / "gta"), "city": str(street / "cityscapes")}, local, options=serial_options())
    images = {name: data for name, data in tree_bytes(out).items() if name.endswith(".png")}
    assert images == {name: data for name, data in tree_bytes(local).items() if name.endswith(".png")}

    for data in tree_bytes(out).values():
        assert FAKE_SECRET_KEY.encode() not in data, "credentials never written"


def test_missing_bucket_is_a_clear_error(s3_endpoint: str, aws_credentials: None, tmp_path: Path) -> None:
    options = serial_options(s3=S3Options(endpoint_url=s3_endpoint))
    with pytest.raises(IngestError, match=r"s3://no-such-bucket-x/street/: cannot list objects: NoSuchBucket") as caught:
        ingest_street({"day": "s3://no-such-bucket-x/street/"}, tmp_path / "ds", options=options)
    assert FAKE_SECRET_KEY not in str(caught.value)
    assert not (tmp_path / "ds").exists()


def test_empty_prefix_is_a_clear_error(street_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    options = serial_options(s3=S3Options(endpoint_url=s3_endpoint))
    with pytest.raises(IngestError, match="no image files found"):
        ingest_street({"day": f"s3://{street_bucket}/nothing-here"}, tmp_path / "ds", options=options)


def test_unreachable_endpoint_fails_after_retries(aws_credentials: None) -> None:
    options = S3Options(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=2)
    started = time.monotonic()
    with pytest.raises(IngestError, match="cannot list objects: Could not connect"):
        list_s3("s3://bucket/prefix", options)
    assert time.monotonic() - started < 30


def test_retry_configuration() -> None:
    client = s3_client(S3Options(max_attempts=7, region="eu-west-1"))
    assert client.meta.config.retries == {"total_max_attempts": 7, "mode": "standard"}
    assert client.meta.region_name == "eu-west-1"


def test_object_deleted_after_listing_is_unreadable(street_bucket: str, s3_endpoint: str) -> None:
    options = S3Options(endpoint_url=s3_endpoint)
    listing = list_s3(f"s3://{street_bucket}/street/city", options)
    s3_client(options).delete_object(Bucket=street_bucket, Key=f"street/city/{Path(listing.files[0].relative).name}")
    with pytest.raises(UnreadableSource, match="cannot read: NoSuchKey"):
        listing.files[0].read()
    assert listing.files[1].read()[:2] == b"\xff\xd8"


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_uri("s3://bucket/a/b") == ("bucket", "a/b/")
    with pytest.raises(IngestError, match="no bucket"):
        parse_s3_uri("s3:///prefix")
