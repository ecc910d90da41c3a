"""The shared secret handling: which variables are secrets, and redaction of streams split anywhere."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tether.agents.secrets import REDACTED, Redactor, env_secrets, without_secrets

# Secrets from a small alphabet, so they often share prefixes and overlap one another; the text
# around them is lower case, and REDACTED is too, so no secret character may reach the output.
SECRET_ALPHABET = "AB12-"
secrets_st = st.lists(st.text(SECRET_ALPHABET, min_size=2, max_size=12), min_size=1, max_size=4)
filler_st = st.text("abc [] xyz\n", max_size=8)


@st.composite
def text_with_secrets(draw: st.DrawFn) -> tuple[list[str], str]:
    secrets = draw(secrets_st)
    parts = draw(st.lists(st.tuples(filler_st, st.sampled_from(secrets)), max_size=6))
    return secrets, "".join(f + s for f, s in parts) + draw(filler_st)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def streamed(redactor: Redactor, chunks: list[str]) -> tuple[str, list[str]]:
    stream = redactor.stream()
    emitted = [stream.feed(chunk) for chunk in chunks]
    emitted.append(stream.flush())
    return "".join(emitted), emitted


@settings(max_examples=400, deadline=None)
@given(text_with_secrets(), st.lists(st.integers(min_value=0), max_size=12))
@example(case=(["111", "11"], "1111"), cuts=[])  # overlapping secrets (found by CI)
def test_any_split_gives_the_whole_text_redaction_and_no_secret_character(
    case: tuple[list[str], str], cuts: list[int],
) -> None:
    secrets, text = case
    redactor = Redactor(secrets)
    out, emitted = streamed(redactor, split(text, cuts))
    assert out == redactor(text)
    assert not any(secret in out for secret in secrets)
    if not _overlap(secrets):
        # Then every match is exactly one secret of the text, and secret characters never appear
        # in the filler: any of them in the output would be a leak, its start held back too late
        # or its end after a split. (Overlapping secrets can leave one: with "111" and "11",
        # "11"+"11" redacts as "[redacted]1", leftmost-longest, streamed or not.)
        assert not set(out) & set(SECRET_ALPHABET)
        # Nor in any chunk as it went out (a later chunk cannot take back what an earlier one showed).
        assert not any(set(piece) & set(SECRET_ALPHABET) for piece in emitted)


def _overlap(secrets: list[str]) -> bool:
    """Whether a secret contains another, or one's end is another's start (itself included)."""
    return any(
        (a != b and b in a) or any(b.startswith(a[i:]) for i in range(1, len(a)))
        for a in secrets for b in secrets
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text("ab", min_size=1, max_size=6), min_size=1, max_size=4), st.text("ab", max_size=30),
       st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_any_text_gives_the_whole_text_redaction(
    secrets: list[str], text: str, cuts: list[int],
) -> None:
    """Secrets and text from the same two letters: every overlap and near-miss there is."""
    redactor = Redactor(secrets)
    stream = redactor.stream()
    out = []
    for chunk in split(text, cuts):
        out.append(stream.feed(chunk))
        # What is held back is never longer than the longest secret − 1.
        assert len(stream._pending) < redactor.longest
    out.append(stream.flush())
    assert "".join(out) == redactor(text)
    assert not any(s in redactor(text).replace(REDACTED, "\0") for s in secrets)


def test_the_longest_secret_wins_and_a_key_split_over_two_deltas_is_redacted() -> None:
    key = "sk-ant-heldout-30f43d384056c0c"
    redactor = Redactor(["sk-ant", key])
    out, _ = streamed(redactor, [f"the key is …{key[:9]}", f"{key[9:]} ok"])
    assert out == f"the key is …{REDACTED} ok"
    assert redactor("sk-ant-other") == f"{REDACTED}-other"


def test_secret_variables_and_what_is_stripped() -> None:
    env = {"OPENAI_API_KEY": "sk-openai-123456", "GH_TOKEN": "ghp_abcdefgh", "DB_PASSWORD": "short",
           "HOME": "/home/u", "TOKEN_TTL": "1"}
    assert env_secrets(env) == ["sk-openai-123456", "ghp_abcdefgh"]
    assert without_secrets(env) == {"HOME": "/home/u"}
    assert without_secrets(env, keep=["GH_TOKEN"]) == {"HOME": "/home/u", "GH_TOKEN": "ghp_abcdefgh"}
