"""Credentials never reach what a sweep shows: hidden by key name in URIs and settings, and for
real on a sweep's parent run, its child runs and its summary (a real `mlflow server`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypersweep.errors import ConfigError
from hypersweep.redaction import MARK, is_secret_key, redact, redact_settings
from hypersweep.tracking import check_tracking_uri
from tests.chaos_tools import free_port, start_server, stop_group
from tests.conftest import ROOT, hypersweep
from tests.mlflow_store import read_sweep

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


def test_an_unreachable_server_is_named_without_its_password() -> None:
    uri = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as error:
        check_tracking_uri(uri, source="s.yaml")
    assert "s3cret-pw" not in str(error.value) and "http://alice:***@127.0.0.1:" in str(error.value)


# A sweep whose tracking URI carries a password, and whose fixed values carry a presigned data
# URL, an API token and look-alikes that must stay visible.
_SECRETS = ("s3cret-pw", "hunter2-pw", "SIGVAL123", "AKIDVAL456", "AMZSIG789", "TOKVAL000")
_SWEEP = """\
name: creds
experiment: tests.toy:ToyRegression
search_space: {lr: {type: loguniform, low: 0.001, high: 0.1}}
fixed:
  data_url: "https://bob:hunter2-pw@data.example.org/set.csv?sig=SIGVAL123&X-Amz-Credential=AKIDVAL456&X-Amz-Signature=AMZSIG789&format=csv"
  api_token: TOKVAL000
  monkey: banana-kept
  keyboard_layout: qwerty-kept
max_epochs: 2
num_samples: 2
scheduler: {type: fifo}
search: {type: random}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_real_sweep_shows_no_credential_anywhere(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path / "server.db", port)
    try:
        sweep = tmp_path / "creds.yaml"
        sweep.write_text(_SWEEP)
        uri = f"http://alice:s3cret-pw@127.0.0.1:{port}"  # the server takes anyone: the URI works
        storage = str(tmp_path / "runs")
        result = hypersweep("run", str(sweep), "--tracking-uri", uri, "--storage", storage, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        stored = read_sweep(f"http://127.0.0.1:{port}", "creds")
        parent = stored.parent.info.run_id
        files = {
            name: Path(stored.client.download_artifacts(parent, name, str(tmp_path))).read_text()
            for name in ("sweep.yaml", "best_config.json", "report/report.html")
        }
        runs = [stored.parent, *stored.children]
        shown = [json.dumps([r.data.params, r.data.tags]) for r in runs]
        everything = "\n".join([*files.values(), *shown, result.stdout, result.stderr])
        for secret in _SECRETS:
            assert secret not in everything, secret
    finally:
        stop_group(server.pid)
    params = stored.parent.data.params
    assert params["tracking_uri"] == f"http://alice:***@127.0.0.1:{port}"
    assert params["fixed.data_url"] == (
        "https://bob:***@data.example.org/set.csv?sig=***&X-Amz-Credential=***&X-Amz-Signature=***&format=csv"
    )
    assert params["fixed.api_token"] == MARK
    assert (params["fixed.monkey"], params["fixed.keyboard_layout"]) == ("banana-kept", "qwerty-kept")
    assert "data_url: https://bob:***@data.example.org/set.csv?sig=***" in files["sweep.yaml"]
    assert "api_token: '***'" in files["sweep.yaml"] and "monkey: banana-kept" in files["sweep.yaml"]
    assert json.loads(files["best_config.json"])["api_token"] == MARK
    for child in stored.children:
        assert child.data.params["api_token"] == MARK and child.data.params["monkey"] == "banana-kept"
        assert child.data.params["data_url"] == params["fixed.data_url"]
    assert f"hypersweep ui --tracking-uri http://alice:***@127.0.0.1:{port}" in result.stdout
    assert "api_token=***" in result.stdout and "monkey=banana-kept" in result.stdout
