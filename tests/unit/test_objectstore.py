"""`--storage s3://...` input checks, the S3 driver's config, the join file's refusals, and the signature."""

from __future__ import annotations

import datetime
import io
import tarfile

import pytest

from mirror.errors import UsageError
from mirror.server.join import read_join
from mirror.server.objectstore import S3Credentials, driver_lines, parse_storage
from mirror.server.sigv4 import signed_headers


def test_storage_url_endpoint_and_region_are_checked_naming_the_flag():
    storage = parse_storage("s3://site-images/a/b/", "https://minio.example:9000", None)
    assert (storage.bucket, storage.prefix, storage.endpoint, storage.region, storage.url) == \
        ("site-images", "a/b", "https://minio.example:9000", "us-east-1", "s3://site-images/a/b")
    for url, endpoint, flag in [("site-images", "http://h", "--storage"), ("s3://Bad_Bucket", "http://h", "--storage"),
                                ("s3://ok-bucket/../up", "http://h", "--storage"),
                                ("s3://ok-bucket", None, "--s3-endpoint"),
                                ("s3://ok-bucket", "ftp://h", "--s3-endpoint"),
                                ("s3://ok-bucket", "http://key:secret@h", "--s3-endpoint"),
                                ("s3://ok-bucket", "http://h/path", "--s3-endpoint")]:
        with pytest.raises(UsageError, match=flag):
            parse_storage(url, endpoint, None)
    with pytest.raises(UsageError, match="--s3-region"):
        parse_storage("s3://ok-bucket", "http://h", "Not A Region")


def test_driver_config_serves_blobs_itself_and_speaks_plain_http_only_to_an_http_endpoint():
    keys = S3Credentials("AK", "SK")
    plain = "\n".join(driver_lines(parse_storage("s3://b-1/p", "http://127.0.0.1:9000", None), keys))
    assert 'regionendpoint: "http://127.0.0.1:9000"' in plain and "secure: false" in plain
    assert 'rootdirectory: "/p"' in plain and "forcepathstyle: true" in plain
    assert "redirect: {disable: true}" in plain  # nodes never need to reach the storage
    secure = "\n".join(driver_lines(parse_storage("s3://b-1", "https://s3.example", None), keys))
    assert "secure: true" in secure and "rootdirectory" not in secure
    assert "SK" not in repr(keys)


def test_signature_is_the_one_aws_sdk_computes(monkeypatch):
    import botocore.auth as botocore_auth  # from moto[server], of the test extra: never skipped
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = datetime.datetime(2026, 12, 5, 12, 0, 0, tzinfo=datetime.timezone.utc)
    query = {"list-type": "2", "max-keys": "1", "prefix": "reg/x y/"}
    ours = signed_headers("GET", "127.0.0.1:9000", "/bucket", query, "us-east-1", "AKID", "SECRET", now)
    request = AWSRequest("GET", "http://127.0.0.1:9000/bucket", params=query)
    signer = botocore_auth.S3SigV4Auth(Credentials("AKID", "SECRET"), "s3", "us-east-1")
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    signer.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]


def _tar(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
    return buffer.getvalue()


SETTINGS = (b'{"storage": "s3://b-1", "s3_endpoint": "http://h:1", "s3_region": "us-east-1", '
            b'"http_secret": "abc123", "tls": "none", "auth": "none"}')


def test_join_file_takes_only_what_export_join_writes(tmp_path):
    good = tmp_path / "good.tar"
    good.write_bytes(_tar({"join.json": SETTINGS}))
    assert read_join(good).storage.url == "s3://b-1"
    for name, content in [("extra", _tar({"join.json": SETTINGS, "../../etc/cron.d/x": b"boom"})),
                          ("link", _tar({"join.json": SETTINGS}, link="ca/ca.key")),
                          ("lying", _tar({"join.json": SETTINGS.replace(b'"none", "auth"', b'"auto", "auth"')})),
                          ("notjson", _tar({"join.json": b"{"})), ("nottar", b"hello")]:
        path = tmp_path / f"{name}.tar"
        path.write_bytes(content)
        with pytest.raises(UsageError, match="--join"):
            read_join(path)
