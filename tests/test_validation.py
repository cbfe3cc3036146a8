import pytest

from mgic_geo.validation import check_choice, check_int


@pytest.mark.parametrize(
    "value, minimum, message",
    [
        (0, 1, r"`n` must be a positive integer, got 0"),
        (True, 1, r"`n` must be a positive integer, got True"),
        (2.0, 1, r"`n` must be a positive integer, got 2.0"),
        (-1, 0, r"`n` must be a non-negative integer, got -1"),
        (3, 7, r"`n` must be an integer >= 7, got 3"),
    ],
)
def test_bad_values_name_the_argument_and_value(value, minimum, message):
    with pytest.raises(ValueError, match=message):
        check_int("n", value, minimum=minimum)


def test_good_values_pass_through():
    assert check_int("n", 5) == 5 and check_int("n", 0, minimum=0) == 0


def test_check_choice_returns_an_allowed_value_and_names_the_others():
    assert check_choice("transition", "dense", ("grouped", "dense")) == "dense"
    for bad in ("Dense", None, 1):
        with pytest.raises(ValueError, match=rf"`transition` must be one of 'grouped', 'dense', got {bad!r}"):
            check_choice("transition", bad, ("grouped", "dense"))
