"""URLs as messages and logs show them: a `user:password@` or `token@` in a URL is a secret.

Here, where the bridge and the conformance runner may both import it, so both redact alike.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def without_userinfo(urls: str) -> str:
    """`urls` (one URL, or several separated by commas) with each userinfo replaced by ***."""
    return ",".join(_one_without_userinfo(url.strip()) for url in urls.split(","))


def _one_without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}"))
