"""English normalization: a golden corpus of written -> spoken, and its invariants."""

from __future__ import annotations

import re

import pytest

from voxserve.text import normalize_text

GOLDEN = [
    # Cardinals, negatives, separators, decimals, large numbers.
    ("I have 42 apples.", "I have forty-two apples."),
    ("It was -7 outside.", "It was minus seven outside."),
    (
        "The population is 1,234,567.",
        "The population is one million two hundred thirty-four thousand five hundred sixty-seven.",
    ),
    ("Pi is 3.14.", "Pi is three point one four."),
    ("Only 0.5 left.", "Only zero point five left."),
    ("It costs 1000000000000 units.", "It costs one trillion units."),
    ("Agent 007 and room 101.", "Agent zero zero seven and room one hundred one."),
    ("Grab the MP3 in 3D.", "Grab the MP three in three D."),
    # Ordinals.
    (
        "He came 1st, she 22nd, they 103rd.",
        "He came first, she twenty-second, they one hundred third.",
    ),
    ("The 21st century.", "The twenty-first century."),
    # Years.
    ("In 1999 we partied.", "In nineteen ninety-nine we partied."),
    ("By 2024 it was over.", "By twenty twenty-four it was over."),
    ("The year 2000 came.", "The year two thousand came."),
    ("Since 2005.", "Since two thousand five."),
    ("Built in 1905.", "Built in nineteen oh five."),
    ("Back in 1900.", "Back in nineteen hundred."),
    ("It was the 1990s.", "It was the nineteen nineties."),
    ("Music of the '80s.", "Music of the eighties."),
    # Money.
    ("It costs $5.", "It costs five dollars."),
    ("Just $1.", "Just one dollar."),
    ("Pay $3.50 now.", "Pay three dollars and fifty cents now."),
    ("Only $0.99 today.", "Only ninety-nine cents today."),
    ("That is £20.", "That is twenty pounds."),
    ("That is €15.", "That is fifteen euros."),
    ("A 15€ ticket.", "A fifteen euros ticket."),
    ("Raised $2.5 million.", "Raised two point five million dollars."),
    ("Worth $1.2B.", "Worth one point two billion dollars."),
    ("Around $10k a year.", "Around ten thousand dollars a year."),
    # Percentages.
    ("Up 45% today.", "Up forty-five percent today."),
    ("Rates of 3.5% apply.", "Rates of three point five percent apply."),
    # Dates.
    ("Due 2024-03-15.", "Due March fifteenth, twenty twenty-four."),
    ("Due 03/15/2024.", "Due March fifteenth, twenty twenty-four."),
    ("Due March 15, 2024.", "Due March fifteenth, twenty twenty-four."),
    ("Due 15 March 2024.", "Due March fifteenth, twenty twenty-four."),
    ("Due Dec. 25th.", "Due December twenty-fifth."),
    ("Open Mon.-Fri. only.", "Open Monday to Friday only."),
    # Times.
    ("Meet at 3:30 pm.", "Meet at three thirty p m."),
    ("At 10:05 sharp.", "At ten oh five sharp."),
    ("At 14:00 hours.", "At fourteen hundred hours."),
    ("At 12:00 we eat.", "At twelve o'clock we eat."),
    ("Wake at 7 a.m. tomorrow.", "Wake at seven a m tomorrow."),
    ("We met at 7 a.m. Then we left.", "We met at seven a m. Then we left."),
    # Ranges, phones, fractions, arithmetic.
    ("Read pages 10-20.", "Read pages ten to twenty."),
    ("From 1990–1995.", "From nineteen ninety to nineteen ninety-five."),
    ("Call 555-123-4567.", "Call five five five, one two three, four five six seven."),
    ("Add 1/2 cup and 3/4 spoon.", "Add one half cup and three quarters spoon."),
    ("Wait 1 1/2 hours.", "Wait one and a half hours."),
    ("Add ½ cup.", "Add one half cup."),
    ("Open 24/7.", "Open twenty-four seven."),
    ("So 1 + 2 = 3.", "So one plus two equals three."),
    ("And 5 - 3 = 2.", "And five minus three equals two."),
    ("A 1920x1080 screen.", "A nineteen twenty by one thousand eighty screen."),
    # Roman numerals in safe places only.
    ("After World War II.", "After World War two."),
    ("King Henry VIII ruled.", "King Henry the eighth ruled."),
    ("I think so.", "I think so."),
    # Abbreviations.
    ("Dr. Smith is in.", "Doctor Smith is in."),
    ("Mr. and Mrs. Jones.", "Mister and Missus Jones."),
    ("Ask Prof. Brown.", "Ask Professor Brown."),
    ("Fly to St. Louis.", "Fly to Saint Louis."),
    ("He lives on Main St.", "He lives on Main Street."),
    ("Turn at 5th St. today.", "Turn at fifth Street today."),
    ("Martin Luther King Jr. spoke.", "Martin Luther King Junior spoke."),
    ("Red vs. blue.", "Red versus blue."),
    ("Fruit, e.g. apples, i.e. food.", "Fruit, for example apples, that is food."),
    ("Apples, pears, etc. The end.", "Apples, pears, et cetera. The end."),
    ("Apples, pears, etc. and more.", "Apples, pears, et cetera and more."),
    ("It took approx. 5 min.", "It took approximately five minutes."),
    ("Acme Inc. sells. Acme Ltd. too.", "Acme Incorporated sells. Acme Limited too."),
    ("Item No. 5 won.", "Item number five won."),
    ("No. I refuse.", "No. I refuse."),
    ("The U.S. law applies.", "The U S law applies."),
    ("She moved to the U.S. Then she left.", "She moved to the U S. Then she left."),
    # Units.
    ("It is 1 km away.", "It is one kilometer away."),
    ("It weighs 5 kg.", "It weighs five kilograms."),
    ("Add 200 g and 1 lb.", "Add two hundred grams and one pound."),
    (
        "Drive 60 mph, or 100 km/h.",
        "Drive sixty miles per hour, or one hundred kilometers per hour.",
    ),
    (
        "It was 25°C, or 77°F.",
        "It was twenty-five degrees Celsius, or seventy-seven degrees Fahrenheit.",
    ),
    ("Cold: -5 °C.", "Cold: minus five degrees Celsius."),
    ("Wait 200 ms, then 1 s.", "Wait two hundred milliseconds, then one second."),
    ("A 4 GB card at 3.5 GHz.", "A four gigabytes card at three point five gigahertz."),
    ("A 100 W bulb at 5 V.", "A one hundred watts bulb at five volts."),
    ("Walk 3 mi, then 6 ft.", "Walk three miles, then six feet."),
    ("A 12 in. pizza.", "A twelve inches pizza."),
    ("Put 5 in the box.", "Put five in the box."),
    ("It is 2x faster.", "It is two times faster."),
    # Addresses.
    ("See https://www.example.com/docs now.", "See example dot com slash docs now."),
    ("See http://example.org/a/b?x=1#top.", "See example dot org slash a slash b."),
    ("Visit example.com/page. Then go.", "Visit example dot com slash page. Then go."),
    ("Mail jane.doe@example.org today.", "Mail jane dot doe at example dot org today."),
    # Symbols.
    ("Tom & Jerry.", "Tom and Jerry."),
    ("Meet @ noon.", "Meet at noon."),
    ("My #1 fan.", "My number one fan."),
    ("About ~10 people.", "About approximately ten people."),
    ("A 90° turn.", "A ninety degrees turn."),
    ("Use 3 × 4 tiles.", "Use three times four tiles."),
    ("From A → B.", "From A to B."),
    ("I like C++ and C#.", "I like C plus plus and C sharp."),
    ("Use snake_case names.", "Use snake case names."),
    # Markdown, HTML, code, emoji.
    ("# Getting started", "Getting started."),
    (
        "Some **bold**, *italic*, __strong__ and ~~old~~ text.",
        "Some bold, italic, strong and old text.",
    ),
    ("Read [the docs](https://example.com) now.", "Read the docs now."),
    ("Look ![a cat](cat.png) here.", "Look here."),
    ("Steps:\n- Install it\n- Run it!\n1. Done", "Steps: Install it. Run it! Done."),
    ("> Quoted wisdom.", "Quoted wisdom."),
    ("| Name | Age |\n|---|---|\n| Ann | 42 |", "Name, Age. Ann, forty-two."),
    ("Run `pip install` first.", "Run first."),
    ("Before.\n\n```python\nprint(1)\n```\n\nAfter.", "Before.\n\nAfter."),
    ("<p>Some <b>HTML</b> &amp; more.</p>", "Some HTML and more."),
    ("Great job 🎉! Thumbs 👍🏽 up.", "Great job! Thumbs up."),
    ("Family 👨‍👩‍👧 time ❤️.", "Family time."),
    # Whitespace and paragraphs.
    ("  Lots   of\tspace\nhere.  ", "Lots of space here."),
    ("First paragraph.\n\n\n\nSecond paragraph.", "First paragraph.\n\nSecond paragraph."),
    ("“Curly” quotes… and ’tis.", '"Curly" quotes... and \'tis.'),
]


WRITTEN = [written for written, _ in GOLDEN]
IDS = [written[:40] for written in WRITTEN]


@pytest.mark.parametrize(("written", "spoken"), GOLDEN, ids=IDS)
def test_golden(written: str, spoken: str) -> None:
    assert normalize_text(written) == spoken


@pytest.mark.parametrize("written", WRITTEN, ids=IDS)
def test_idempotent(written: str) -> None:
    once = normalize_text(written)
    assert normalize_text(once) == once


def test_output_has_nothing_a_voice_would_spell_out() -> None:
    spoken = normalize_text("\n\n".join(WRITTEN))
    assert not re.search(r"[\d*_#|<>\[\]{}`^~@&=+$%\\\u00a3\u20ac\u00b0]", spoken)


def test_empty_text() -> None:
    assert normalize_text("") == ""
    assert normalize_text("  \n\n 🎉 ") == ""
