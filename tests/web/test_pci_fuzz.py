"""Fuzzing the PCI guard (hypothesis): a PAN embedded anywhere in a random JSON document, with
any separator, is always found; documents full of timestamps, phone numbers and UUIDs pass at a
false-positive rate below 0.1 %. Bounded: a fixed number of examples, no deadline."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paysvc.web.pci import scan_json
from tests.web.test_card_detection import ALL_PANS, SEPARATORS

PAN_EXAMPLES = 600
BENIGN_EXAMPLES = 2000


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same documents every run: a bounded, reproducible test
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Text around a value: letters, punctuation and spaces, never digits (a digit glued to the PAN
# makes another, longer number).
WORDS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABC _:/#é,;()"), max_size=12)
KEYS = st.sampled_from(
    ["order_id", "id", "ref", "note", "created", "phone", "items", "meta", "at", "contact", "x"]
)
NOISE: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(0, 100_000), WORDS, st.just([]), st.just({})
)


@st.composite
def separated(draw: st.DrawFn, pan: str) -> str:
    """The PAN cut into random groups, any separator (1-3 characters) between them."""
    cuts = sorted(draw(st.sets(st.integers(1, len(pan) - 1), max_size=len(pan) - 1)))
    groups = [pan[a:b] for a, b in zip([0, *cuts], [*cuts, len(pan)], strict=True)]
    separators = st.lists(st.sampled_from(list(SEPARATORS.values())), min_size=1, max_size=2)
    text = groups[0]
    for group in groups[1:]:
        text += "".join(draw(separators))[:3] + group
    return text


@st.composite
def pan_leaf(draw: st.DrawFn) -> tuple[str, Any]:
    """(how, JSON value holding the PAN)."""
    _, pan = draw(st.sampled_from(ALL_PANS))
    how = draw(st.sampled_from(["string", "key", "number", "array"]))
    if how == "number":
        return how, int(pan)
    if how == "array":  # split across adjacent items (fragments shorter than a PAN)
        middle = {len(pan) // 2}
        cuts = sorted(middle | draw(st.sets(st.integers(1, len(pan) - 1), max_size=4)))
        parts = [pan[a:b] for a, b in zip([0, *cuts], [*cuts, len(pan)], strict=True)]
        as_numbers = draw(st.booleans()) and not any(p.startswith("0") for p in parts)
        return how, [int(p) for p in parts] if as_numbers else parts
    text = f"{draw(WORDS)} {draw(separated(pan))} {draw(WORDS)}".strip()
    return how, {text: draw(NOISE)} if how == "key" else text


@st.composite
def embedded(draw: st.DrawFn, leaf: Any) -> Any:
    """`leaf` placed at a random position, 0-4 levels deep, among random siblings."""
    value = leaf
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            items = list(draw(st.dictionaries(KEYS, NOISE, max_size=3)).items())
            items.insert(draw(st.integers(0, len(items))), (draw(KEYS) + "_x", value))
            value = dict(items)
        else:
            siblings = draw(
                st.lists(st.one_of(st.dictionaries(KEYS, NOISE, max_size=2)), max_size=3)
            )
            siblings.insert(draw(st.integers(0, len(siblings))), value)
            value = siblings
    return value


@st.composite
def documents_with_a_pan(draw: st.DrawFn) -> tuple[str, bytes]:
    how, leaf = draw(pan_leaf())
    return how, json.dumps(draw(embedded(leaf)), ensure_ascii=draw(st.booleans())).encode()


def test_a_pan_anywhere_with_any_separator_is_found() -> None:
    missed: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    @fuzz(PAN_EXAMPLES)
    @given(documents_with_a_pan())
    def run(case: tuple[str, bytes]) -> None:
        how, raw = case
        seen.add(how)
        if scan_json(raw) is None:
            missed.append(case)

    run()
    assert seen == {"string", "key", "number", "array"}
    assert missed == []


# -- benign documents ---------------------------------------------------------------------------

COUNTRY_PHONES = [  # (country code, national significant number lengths)
    ("1", [10]),
    ("44", [10]),
    ("49", [10, 11]),
    ("33", [9]),
    ("34", [9]),
    ("39", [9, 10]),
    ("55", [10, 11]),
    ("61", [9]),
    ("62", [10, 11]),
    ("65", [8]),
    ("81", [10]),
    ("86", [11]),
    ("91", [10]),
    ("380", [9]),
    ("36", [9]),
]


@st.composite
def phone_number(draw: st.DrawFn) -> str:
    code, lengths = draw(st.sampled_from(COUNTRY_PHONES))
    length = draw(st.sampled_from(lengths))
    national = str(draw(st.integers(2, 9))) + "".join(
        str(d) for d in draw(st.lists(st.integers(0, 9), min_size=length - 1, max_size=length - 1))
    )
    style = draw(st.integers(0, 4))
    if style == 0:
        return f"+{code}{national}"  # E.164
    if style == 1:
        return f"+{code} {national[:3]} {national[3:6]} {national[6:]}"
    if style == 2:
        return f"0{national[:3]}-{national[3:6]}-{national[6:]}"
    if style == 3:
        return f"({national[:3]}) {national[3:6]}-{national[6:]}"
    return f"{national[:3]}.{national[3:6]}.{national[6:]}"


MS = st.integers(1_500_000_000_000, 2_100_000_000_000)
TIMESTAMPS = st.one_of(
    MS.map(lambda ms: f"web-{ms}"),
    MS.map(str),
    MS,
    MS.map(lambda ms: ms // 1000),
    MS.map(lambda ms: ms * 1000),
    st.datetimes().map(lambda when: when.isoformat()),
    st.datetimes().map(lambda when: when.strftime("%Y%m%d%H%M%S")),
    st.datetimes().map(lambda when: when.strftime("%d.%m.%Y %H:%M")),
)
BENIGN_VALUE = st.one_of(
    TIMESTAMPS,
    phone_number(),
    st.uuids().map(str),
    st.integers(0, 10_000),
    WORDS,
)
BENIGN_TEXT = st.lists(st.one_of(BENIGN_VALUE.map(str), WORDS), min_size=1, max_size=3).map(
    " , ".join
)
BENIGN_DOC = st.recursive(
    st.one_of(BENIGN_VALUE, BENIGN_TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)


def test_timestamps_phone_numbers_and_uuids_pass() -> None:
    outcomes: list[bool] = []
    flagged: list[bytes] = []

    @fuzz(BENIGN_EXAMPLES)
    @given(BENIGN_DOC)
    def run(doc: Any) -> None:
        raw = json.dumps(doc).encode()
        rejected = scan_json(raw) is not None
        outcomes.append(rejected)
        if rejected:
            flagged.append(raw)

    run()
    rate = sum(outcomes) / len(outcomes)
    print(f"PCI guard false-positive rate: {rate:.4%} of {len(outcomes)} random documents")
    assert len(outcomes) >= BENIGN_EXAMPLES // 2
    assert rate < 0.001, flagged
