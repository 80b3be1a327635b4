"""Phone numbers: normalised to digits, displayed in a campaign's format, bad input refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrack.tracking.numbers import MAX_FORMAT_LENGTH, check_format, display, normalise
from tests.helpers_tables import cases

NORMALISED = [
    ("plain", "74951234567", "74951234567"),
    ("plus seven", "+74951234567", "74951234567"),
    ("eight", "84951234567", "74951234567"),
    ("eight with brackets", "8 (495) 123-45-67", "74951234567"),
    ("plus seven spaced", "+7 495 123 45 67", "74951234567"),
    ("no-break spaces", "+7\u00a0495\u00a0123\u201145\u201167", "74951234567"),
    ("dots and slash", "8.495/123.45.67", "74951234567"),
    ("en dash", "8 495 123–45–67", "74951234567"),
    ("surrounding blanks", "  +7 (916) 123-45-67\t", "79161234567"),
    ("ten digits", "9161234567", "79161234567"),
    ("ten digits with plus stay", "+4930123456", "4930123456"),
    ("plus eight six (China) stays", "+86 10 1234 5678", "861012345678"),
    ("double zero", "0049 30 1234567", "49301234567"),
    ("eight ten", "8 10 49 30 1234567", "49301234567"),
    ("fifteen digits", "+123456789012345", "123456789012345"),
    ("eleven digits not eight", "12025550143", "12025550143"),
]


@pytest.mark.parametrize(
    ("text", "digits"),
    cases(NORMALISED),
)
def test_normalise(text: str, digits: str) -> None:
    assert normalise(text) == digits


REFUSED = [
    ("empty", "", "0 digits"),
    ("letters", "8 495 CALL-NOW", "'C'"),
    ("extension", "+7 495 123-45-67 доб. 12", "'д'"),
    ("nine digits", "+7 495 12345", "9 digits"),
    ("sixteen digits", "+1234567890123456", "16 digits"),
    ("plus inside", "7+4951234567", "'+'"),
    ("two pluses", "++74951234567", "'+'"),
    ("too long", "7" + " " * 70 + "4951234567", "longer than 64"),
    ("arabic-indic digits", "٧٤٩٥١٢٣٤٥٦٧", "'٧'"),
    ("tel link", "tel:+74951234567", "'t'"),
]


@pytest.mark.parametrize(
    ("text", "said"),
    cases(REFUSED),
)
def test_normalise_refuses_what_is_not_a_phone_number(text: str, said: str) -> None:
    with pytest.raises(ValueError, match="not a phone number") as caught:
        normalise(text)
    assert said in str(caught.value)


SHOWN = [
    ("the contract's example", "74951234567", "+7 (XXX) XXX-XX-XX", "+7 (495) 123-45-67"),
    ("every digit marked", "74951234567", "X XXX XXX-XX-XX", "7 495 123-45-67"),
    ("last digits only", "74951234567", "8 (XXX) XXX-XX-XX", "8 (495) 123-45-67"),
    ("the fewest marks", "74951234567", "X-XX-XX", "3-45-67"),
    ("more marks: leading ones dropped", "74951234567", "+XX XXX XXX-XX-XX", "+7 495 123-45-67"),
    ("marks far beyond digits", "4930123456", "XXXXXXXXXXXXXXX", "4930123456"),
    ("empty format", "74951234567", "", "+74951234567"),
    ("literal digits kept", "74951234567", "+7 495 XXX XX XX", "+7 495 123 45 67"),
    ("unicode text around", "74951234567", "☎ XXX·XXX·XX·XX", "☎ 495·123·45·67"),
    ("lowercase x is text", "74951234567", "x XXXXX", "x 34567"),
]


@pytest.mark.parametrize(
    ("digits", "fmt", "shown"),
    cases(SHOWN),
)
def test_display(digits: str, fmt: str, shown: str) -> None:
    assert display(digits, fmt) == shown


BAD_DISPLAY = [
    ("format without marks", "74951234567", "+7 495", "has 0 X marks"),
    ("format with too few marks", "74951234567", "+7 495 123 XX XX", "has 4 X marks.*at least 5"),
    ("format too long", "74951234567", "X" * (MAX_FORMAT_LENGTH + 1), "longer than 64"),
    ("format with a newline", "74951234567", "XXX\nXXX", "control character"),
    ("digits with a plus", "+74951234567", "XXX", "not 1 to 15 digits"),
    ("no digits", "", "XXX", "not 1 to 15 digits"),
    ("sixteen digits", "1" * 16, "XXX", "not 1 to 15 digits"),
]


@pytest.mark.parametrize(
    ("digits", "fmt", "said"),
    cases(BAD_DISPLAY),
)
def test_display_refuses(digits: str, fmt: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        display(digits, fmt)


def test_check_format_returns_a_good_format() -> None:
    assert check_format("+7 (XXX) XXX-XX-XX") == "+7 (XXX) XXX-XX-XX"
    assert check_format("") == ""


numbers = st.from_regex(r"\A7[0-9]{10}\Z") | st.from_regex(r"\A[1-69][0-9]{9,14}\Z")
# Any mix of marks and literals with at least the 5 marks a format needs, in any order.
formats = (
    st.lists(st.sampled_from("X -()+"), max_size=MAX_FORMAT_LENGTH - 5)
    .flatmap(lambda chars: st.permutations([*"XXXXX", *chars]))
    .map("".join)
)
separators = st.sampled_from([" ", "-", "(", ")", ".", "\u00a0", "–", "/", ""])


@given(numbers, st.data())
def test_a_number_written_with_any_separators_normalises_back(
    digits: str, data: st.DataObject
) -> None:
    written = "+" + "".join(char + data.draw(separators) for char in digits)
    assert normalise(written) == digits


@given(numbers, st.data())
def test_a_format_marking_every_digit_displays_a_number_that_normalises_back(
    digits: str, data: st.DataObject
) -> None:
    literals = st.text(alphabet=" ()-.", max_size=2)
    fmt = "+" + "".join(data.draw(literals) + "X" for _ in digits)
    shown = display(digits, fmt)
    assert normalise(shown) == digits
    assert normalise(display(digits, "")) == digits


@given(
    numbers,
    formats,
)
def test_display_keeps_the_literals_and_ends_with_the_last_digits(digits: str, fmt: str) -> None:
    shown = display(digits, fmt)
    marks = fmt.count("X")
    assert [c for c in shown if not c.isdigit()] == [c for c in fmt if c != "X"]
    assert "".join(c for c in shown if c.isdigit()) == digits[-marks:]
