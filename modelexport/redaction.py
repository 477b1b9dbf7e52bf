"""Keep secrets out of everything we record: :func:`scrub` replaces credentials in any text with ``***``.

URL credentials, ``token=``-style query values, Hugging Face tokens, bearer tokens, and the values of any
environment variable whose name says it is a secret (``HF_TOKEN``, ``*_API_KEY``...). MLflow params, tags and text
artifacts all pass through it (tracking/runs.py), and so do the errors the CLI prints.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH", re.I)
SECRET_PATTERNS = [
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@"), r"\1***@"),  # https://user:token@host
    (re.compile(r"(?<![\w.:/-])[\w.%+-]+:[^/@\s'\":]+@"), "***@"),  # user:token@host, no scheme
    (re.compile(r"(?i)\b(token|access_token|api_key|apikey|password|secret|sig)=[^&\s'\"]+"), r"\1=***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), "hf_***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]{8,}=*"), r"\1 ***"),
]
# Text each pattern cannot match without (casefolded): a substring test is ~50x faster than the regex scan, and
# a model's reports (megabytes of JSON and GraphML) rarely hold any of them.
TRIGGERS = [("://",), ("@",), ("token=", "api_key=", "apikey=", "password=", "secret=", "sig="), ("hf_",), ("bearer",)]


def secret_values() -> list[str]:
    """Values of environment variables whose names say they hold a secret (long enough to be one); read once for
    many texts (:func:`scrub`'s `secrets`), since scanning the environment costs more than scrubbing a param."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def has_credentials(text: str) -> bool:
    """True when `text` holds a credential that :func:`scrub` would hide (a URL's user and password, a token)."""
    return scrub(text, secrets=[]) != text


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """`text` with credentials and secret environment values (`secrets`, else :func:`secret_values`) replaced by
    ``***``."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    folded = text.casefold()  # as the patterns' (?i) matching: "paſſword=" casefolds to "password="
    for (pattern, replacement), triggers in zip(SECRET_PATTERNS, TRIGGERS):
        if any(t in folded for t in triggers):
            text = pattern.sub(replacement, text)
    return text
