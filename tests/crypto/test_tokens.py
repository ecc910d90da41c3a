"""Access tokens: the format round-trips, every typo is caught before any network use, and the
secret never shows in a repr, a str or an error."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.crypto.keys import Identity
from tether.crypto.tokens import MAX_CHARS, PREFIX, AccessToken, parse_token
from tether.errors import UsageError

B32 = "abcdefghijklmnopqrstuvwxyz234567"


def _token(relay_url: str = "wss://relay.example.com", expires_at: float | None = None) -> AccessToken:
    return AccessToken.generate(
        relay_url=relay_url,
        host_id=Identity.generate().id,
        host_static=Identity.generate().static_public,
        expires_at=time.time() + 3600 if expires_at is None else expires_at,
    )


@pytest.mark.parametrize("url", ["wss://relay.example.com", "http://127.0.0.1:8765", "https://r.example/é/ws"])
def test_round_trip(url: str) -> None:
    token = _token(url)
    text = token.format()
    assert text.startswith(PREFIX) and len(text) <= MAX_CHARS
    assert set(text[len(PREFIX):]) <= set(B32)
    parsed = parse_token(text)
    assert parsed == token
    assert parse_token(f"  {text.upper().replace('TTH_', 'tth_')}\n") == token, "case and whitespace do not matter"
    assert parsed.identity().id == Identity.from_seed(token.seed).id == token.id
    assert len(token.seed) * 8 >= 256


def test_keys_derive_from_the_seed_only() -> None:
    a, b = _token(), _token()
    assert a.id != b.id
    same_seed = AccessToken(b.relay_url, b.host_id, b.host_static, b.expires_at, a.seed)
    assert same_seed.identity().identity_public == a.identity().identity_public
    assert same_seed.identity().static_public == a.identity().static_public


def test_every_single_character_typo_is_caught() -> None:
    text = _token().format()
    rng = random.Random(4)
    tried = 0
    for i in range(len(PREFIX), len(text)):
        for wrong in rng.sample([c for c in B32 if c != text[i]], 8):
            with pytest.raises(UsageError) as info:
                parse_token(text[:i] + wrong + text[i + 1 :])
            assert "mistyped or damaged" in info.value.message or "wrong length" in info.value.message
            tried += 1
    assert tried > 1000


def test_swapped_neighbours_dropped_and_extra_characters_are_caught() -> None:
    text = _token().format()
    body = len(PREFIX)
    for i in range(body, len(text) - 1):
        if text[i] != text[i + 1]:
            with pytest.raises(UsageError):
                parse_token(text[:i] + text[i + 1] + text[i] + text[i + 2 :])
    for i in range(body, len(text), 7):
        with pytest.raises(UsageError):
            parse_token(text[:i] + text[i + 1 :])
        with pytest.raises(UsageError):
            parse_token(text[:i] + "a" + text[i:])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: "ghp_" + t[4:], "should start with tth_"),
        (lambda t: t[4:], "should start with tth_"),
        (lambda t: t[:40] + "1" + t[41:], "characters a token never has"),
        (lambda t: t[:40] + "=" + t[41:], "characters a token never has"),
        (lambda t: t[:30], "wrong length"),
        (lambda t: t + "a" * 900, "characters a token never has"),
        (lambda t: "tth_", "wrong length"),
    ],
)
def test_clear_errors(mangle: object, message: str) -> None:
    text = _token().format()
    with pytest.raises(UsageError) as info:
        parse_token(mangle(text))  # type: ignore[operator]
    assert message in info.value.message


def test_secret_never_in_repr_str_or_errors() -> None:
    token = _token()
    text = token.format()
    secret_parts = [text, text[len(PREFIX):], token.seed.hex(), repr(token.seed)]
    shown = [repr(token), str(token), f"{token}", repr([token])]
    for i in range(len(PREFIX), len(text), 5):
        try:
            parse_token(text[:i] + ("b" if text[i] != "b" else "c") + text[i + 1 :])
        except UsageError as exc:
            shown += [str(exc), repr(exc), exc.message, exc.hint or ""]
    for s in shown:
        for secret in secret_parts:
            assert secret not in s
        assert text[len(PREFIX) : len(PREFIX) + 16] not in s


def test_expiry_is_carried() -> None:
    assert _token(expires_at=time.time() - 5).expired
    fresh = _token(expires_at=time.time() + 100)
    assert not fresh.expired and parse_token(fresh.format()).expires_at == fresh.expires_at
    assert "UTC" in fresh.expiry_text()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text_only_raises_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_token(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=B32, min_size=100, max_size=400))
def test_fuzz_prefixed_base32_only_raises_usage_error(body: str) -> None:
    with pytest.raises(UsageError):
        parse_token(PREFIX + body)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_tokens_only_raise_usage_error(data: st.DataObject) -> None:
    text = _token().format()
    i = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.text(max_size=3))
    mutated = text[:i] + replacement + text[i + 1 :]
    try:
        parsed = parse_token(mutated)
    except UsageError:
        return
    assert parsed == parse_token(text), "only a change of case or whitespace may still parse"
