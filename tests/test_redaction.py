"""Credentials never reach what a sweep shows: hidden by key name in URIs and settings."""

from __future__ import annotations

import json

import pytest

from hypersweep.tracking.redaction import MARK, is_secret_key, redact, redact_settings

SECRET_NAMES = [
    "password", "passwd", "pwd", "pass", "secret", "token", "key", "sig", "signature", "credential",
    "credentials", "Password", "api_key", "apiKey", "APIKEY", "api-key", "x-api-key", "access_token",
    "accessToken", "id_token", "refresh_token", "client_secret", "aws_secret_access_key",
    "AWS_SECRET_ACCESS_KEY", "secret_key", "db_password", "password_file", "SharedAccessSignature",
    "X-Amz-Credential", "X-Amz-Signature", "x-amz-security-token", "X-AMZ-DATE", "X-Goog-Signature",
    "auth", "basic_auth", "authtoken", "passkey", "token2", "private_key",
]  # fmt: skip
LOOK_ALIKES = [
    "monkey", "passage", "keyboard_layout", "key_dim", "token_type", "max_tokens", "num_keys",
    "tokenizer", "signal", "sigma", "hotkey", "bypass", "turkey", "auth_mode", "author", "user",
    "username", "format", "versionId", "AWSAccessKeyId", "x-amzn-trace", "lr", "batch_size", "",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_credential_is_known_by_its_name(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_a_name_that_only_contains_a_credential_word_is_not_one(name: str) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        # userinfo: the password always goes, the user name stays unless it is a token
        ("http://alice:s3cret@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("postgresql://mlflow:pw%40x@db:5432/runs", "postgresql://mlflow:***@db:5432/runs"),
        ("https://alice:@h/x", "https://alice:***@h/x"),
        ("postgresql://mlflow@db/runs", "postgresql://mlflow@db/runs"),
        ("https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI%2FK7MDENG@bucket/runs", "s3://***:***@bucket/runs"),
        # query and fragment: credential-named values go, other keys stay, in order, as encoded
        ("https://h/api?token=abc&x=1", "https://h/api?token=***&x=1"),
        ("https://h/p?a=b%20c&api_key=k&flag&page=2", "https://h/p?a=b%20c&api_key=***&flag&page=2"),
        (
            "https://b.s3.amazonaws.com/k.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F2024"
            "&X-Amz-Signature=f00d&versionId=3",
            "https://b.s3.amazonaws.com/k.csv?X-Amz-Algorithm=***&X-Amz-Credential=***"
            "&X-Amz-Signature=***&versionId=3",
        ),
        ("https://acct.blob.core.windows.net/c/f?sv=2022&sig=Zm9v%3D&se=2030", "https://acct.blob.core.windows.net/c/f?sv=2022&sig=***&se=2030"),
        ("https://h/cb#access_token=abc&state=xyz", "https://h/cb#access_token=***&state=xyz"),
        ("https://h/?monkey=1&passage=2&keyboard_layout=us", "https://h/?monkey=1&passage=2&keyboard_layout=us"),
        ("https://h/?token=", "https://h/?token="),  # nothing to hide
        # both at once, and a URI inside a longer text (an error message), two joined by a comma
        ("https://u:p@h/x?secret=s&n=1", "https://u:***@h/x?secret=***&n=1"),
        ("cannot open http://u:pw@h:1/x: refused", "cannot open http://u:***@h:1/x: refused"),
        ("http://a:pa@h1,http://b:pb@h2/?sig=s", "http://a:***@h1,http://b:***@h2/?sig=***"),
        # untouched, byte for byte
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("/plain/path/runs", "/plain/path/runs"),
        ("https://h/a%2Fb?q=a+b&x=%41", "https://h/a%2Fb?q=a+b&x=%41"),
    ],
)  # fmt: skip
def test_redact_hides_userinfo_passwords_and_credential_query_values(uri: str, shown: str) -> None:
    assert redact(uri) == shown


def test_settings_hide_credential_named_values_and_uris_and_keep_the_rest() -> None:
    settings = {
        "tracking_uri": "http://u:pw1@h",
        "storage": "s3://k:pw2@b/x",
        "training": {"patience": 5},
        "fixed": {
            "api_token": "tok3",
            "password": 4444,  # a number is hidden too
            "use_token": True,  # a flag says nothing
            "secret": None,
            "credentials": {"user": "bob5", "list": ["k6", "k7"]},
            "data_url": "https://d/x.csv?sig=s8&format=csv",
            "monkey": "banana",
            "max_tokens": 128,
            "hidden_sizes": [32, 16],
        },
        "search_space": {"key_dim": {"type": "int", "low": 8, "high": 64}},
    }
    shown = redact_settings(settings)
    for secret in ("pw1", "pw2", "tok3", "4444", "bob5", "k6", "k7", "s8"):
        assert secret not in json.dumps(shown), secret
    fixed = shown["fixed"]
    assert fixed["api_token"] == fixed["password"] == MARK
    assert (fixed["use_token"], fixed["secret"]) == (True, None)
    assert fixed["credentials"] == {"user": MARK, "list": [MARK, MARK]}
    assert fixed["data_url"] == "https://d/x.csv?sig=***&format=csv"
    assert (fixed["monkey"], fixed["max_tokens"], fixed["hidden_sizes"]) == ("banana", 128, [32, 16])
    assert shown["training"] == {"patience": 5} and shown["search_space"] == settings["search_space"]
    assert shown["tracking_uri"] == "http://u:***@h" and shown["storage"] == "s3://k:***@b/x"
    # by_key=False (the sweep's own manifest): URIs only, key-named values kept for resume
    kept = redact_settings(settings, by_key=False)["fixed"]
    assert kept["api_token"] == "tok3" and kept["data_url"] == fixed["data_url"]
