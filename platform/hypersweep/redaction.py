"""Credentials hidden from what a sweep shows everyone: MLflow params and artifacts, the terminal.

What is secret is decided by name, never by where a substring happens to occur. A name (a query
key of a URI, a key of the sweep's settings) is split into its words: at every character that is
not a letter or a digit, and at camelCase boundaries (``apiKey`` -> ``api``, ``key``;
``AWSAccessKeyId`` -> ``aws``, ``access``, ``key``, ``id``); trailing number words are dropped
(``token2`` ends with ``token``). The name is a credential's when

* any word is ``password``, ``passwd``, ``passphrase``, ``secret`` or ``credential`` (also in
  the plural): these name secrets wherever they stand (``client_secret``, ``db_password_file``);
* its last word is ``pwd``, ``pass``, ``token``, ``key``, ``sig``, ``signature``, ``auth`` or
  ``authorization``: these also head ordinary compounds and hyperparameters (``key_dim``,
  ``token_type``, ``pass_rate``, ``auth_mode``), which stay; plurals stay too (``max_tokens``,
  ``num_keys``);
* its last word is one of those joined to a qualifier in one word (``apikey``, ``accesstoken``,
  ``authtoken``, ``secretkey``, ``passkey``: see ``_QUALIFIERS``);
* it starts with ``x-amz-`` (any case): every parameter of an AWS presigned URL.

So ``api_key``, ``access_token``, ``aws_secret_access_key``, ``X-Amz-Credential``, ``sig`` are
hidden, and ``monkey``, ``passage``, ``keyboard_layout``, ``tokenizer``, ``signal`` are not. A
harmless value under a credential-like name (``sort_key``) is hidden too: the safe side.

In a URI (anything with ``://``) the password of ``user:password@host`` is always hidden, the
user name too when it looks like a token (``_looks_like_token``), and in the query string and
fragment the values of credential-named keys; everything else is kept byte for byte, the other
keys in their order. The authority ends at the first ``/``, ``?`` or ``#``, as for MLflow,
requests and fsspec: a password must be percent-encoded to work there at all.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

MARK = "***"  # what a hidden value shows; `resume` looks for it (credentials to be given again)

_ANYWHERE = frozenset({"password", "passwd", "passphrase", "secret", "credential"})
_LAST = frozenset({"pwd", "pass", "token", "key", "sig", "signature", "auth", "authorization"})
# Words that make a one-word compound with a _LAST word: apikey, accesstoken, secretkey.
_QUALIFIERS = (
    "api", "access", "auth", "secret", "session", "refresh", "private", "client", "bearer",
    "id", "sas", "master", "account", "security", "pass",
)  # fmt: skip
# Words of a name: runs of capitals not followed by a lower-case letter (AWS), capitalised or
# lower-case words (Access, key), numbers.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~+/=-]+")
# A URI inside a longer text: a scheme, ://, and what follows up to a space, a quote or the
# next URI's scheme (two URIs joined by a comma are two URIs).
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URI = re.compile(rf"{_SCHEME}(?:(?!{_SCHEME})[^\s'\"<>])*")


def is_secret_key(name: str) -> bool:
    """Whether ``name`` names a credential (see the module's docstring for the rule)."""
    if name.strip().lower().startswith("x-amz-"):
        return True
    words = [w.lower() for w in _WORDS.findall(name)]
    while words and words[-1].isdigit():
        words.pop()
    if not words:
        return False
    if any(w in _ANYWHERE or (w.endswith("s") and w[:-1] in _ANYWHERE) for w in words):
        return True
    last = words[-1]
    return last in _LAST or any(last == q + word for q in _QUALIFIERS for word in _LAST)


def redact(text: str) -> str:
    """``text`` with the credentials of every URI in it hidden; the rest as is, byte for byte.

    ``https://alice:pw@h/x?token=abc&page=2`` -> ``https://alice:***@h/x?token=***&page=2``.
    """
    return _URI.sub(lambda found: _redact_uri(found.group()), text) if "://" in text else text


def _redact_uri(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    shown = _redact_authority(authority), path, question, _redact_pairs(query), hash_, _redact_pairs(fragment)
    return scheme + sep + "".join(shown)


def _redact_authority(authority: str) -> str:
    """``user:password@host:port`` -> ``user:***@host:port`` (the user hidden if token-like)."""
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return authority
    user, colon, _ = userinfo.partition(":")
    if _looks_like_token(urllib.parse.unquote(user)):
        user = MARK
    return f"{user}{colon}{MARK if colon else ''}@{host}"


def _looks_like_token(user: str) -> bool:
    """A user name that is a credential itself (``https://<token>@host``, an access key id):
    16 characters or more of a token's alphabet, with letters and digits mixed. Names people
    choose (``alice``, ``mlflow-writer``, ``first.last``) stay."""
    return (
        len(user) >= 16
        and _TOKEN_CHARS.fullmatch(user) is not None
        and any(c.isdigit() for c in user)
        and any(c.isalpha() for c in user)
    )


def _redact_pairs(query: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***``: only values change, encoding and order are kept."""
    if "=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if eq and value and is_secret_key(urllib.parse.unquote_plus(key)):
            value = MARK
        parts.append(f"{key}{eq}{value}")
    return "&".join(parts)


def redact_settings(data: Any, *, by_key: bool = True) -> Any:
    """``data`` (settings: mappings, lists, scalars) as it may be shown to everyone: every URI
    redacted and, with ``by_key``, everything under a credential-named key hidden (every string
    and number in it, however nested; booleans and nulls say nothing and stay)."""
    if isinstance(data, Mapping):
        return {
            k: _hide(v) if by_key and is_secret_key(str(k)) else redact_settings(v, by_key=by_key)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_settings(v, by_key=by_key) for v in data]
    return redact(data) if isinstance(data, str) else data


def _hide(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _hide(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hide(v) for v in value]
    if isinstance(value, bool) or value is None or value == "":
        return value  # says nothing: whether a token is set, not which
    return MARK
