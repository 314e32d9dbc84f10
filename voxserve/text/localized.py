"""Numbers, dates, times, money and percentages read in the text's own language.

English has its own, richer normalizer (``normalize.py``). For the languages in ``LOCALES`` the
numbers a voice would otherwise read digit by digit, or in English, are spelled out with
``num2words`` in that language, following its written conventions: the decimal comma and the
thousands point of ``3,5`` and ``1.250`` (a space in French), ``14:30`` and ``14h30``,
``15.03.2024`` and ``15/03/2024``, ``5,50 €``, ``20 °C``. Markup is taken out as for English.
Anything else (units, abbreviations, symbols) is left as written: an engine reads "km" better
than an English rule would.

A language without a locale here has no normalizer (``normalizer_for`` gives None): its text goes
to the engine as written, never through the English rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from num2words import CONVERTER_CLASSES, num2words

from voxserve.text.markup import strip_markup
from voxserve.text.speakable import drop_control_characters
from voxserve.text.typography import unify_typography


@dataclass(frozen=True)
class Locale:
    """How one language writes and says numbers."""

    code: str
    """num2words' language code."""
    months: tuple[str, ...]
    percent: str
    degrees: tuple[str, str]
    """The degree, one and many ("Grad", "degrés")."""
    hours: Callable[[str, str, int], str]
    """The spoken time from the hour's and minutes' words (and the minutes' value)."""
    date: str
    """The spoken date: ``{day}``, ``{month}`` and ``{year}``, in the language's order."""
    first_day: str | None = None
    """The word for the first of a month where it is an ordinal while other days are not."""
    thousands: str = "."
    one_hour: str | None = None
    """The hour 1 where it is feminine ("una", "uma")."""
    one_before_noun: str | None = None
    """1 before a noun where it is not the counted "one" ("ein Euro", "un euro")."""
    cents_joiner: str = ""
    """Between an amount's units and its cents ("fünf Euro und fünfzig Cent")."""
    decimal_word: tuple[str, str] | None = None
    """num2words' word for the decimal point, and the one said for a decimal comma."""
    time_unit: str | None = None
    """The word that may follow a written time ("14:30 Uhr"), said once."""
    ordinal_marks: str | None = None
    """What follows the digits of an ordinal, as a regex ("1er", "2º"); None: no such mark."""
    article_ordinals: dict[str, str] | None = None
    """German: "3." is an ordinal after an article, with the case ending the article asks for
    ("der dritte Platz", "am dritten Mai"); the same ending for a date's day. A date after no
    article ends as ``""`` gives ("fünfzehnter März")."""


def _time(joiner: str, unit: str = "", plural: str = "") -> Callable[[str, str, int], str]:
    """``14:30`` as "<hour> <unit> <minutes>" ("vierzehn Uhr dreißig"), or "<hour> <joiner>
    <minutes>" ("catorce y treinta"); on the hour, the hour (and unit) alone."""

    def spoken(hour: str, minutes: str, minute: int) -> str:
        named = f"{hour} {plural if plural and hour not in ('une', 'un') else unit}".strip()
        if minute == 0:
            return named
        return f"{named} {minutes}" if unit else f"{hour} {joiner} {minutes}"

    return spoken


ROMANCE_ORDINALS = r"\.?º|\.?ª"
"""1º, 2.ª: the masculine and feminine ordinal marks of Spanish, Italian and Portuguese."""

LOCALES: dict[str, Locale] = {
    "de": Locale(
        "de",
        ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
         "Oktober", "November", "Dezember"),
        "Prozent", ("Grad", "Grad"), _time("", "Uhr"), "{day} {month} {year}",
        one_before_noun="ein", cents_joiner="und", time_unit="Uhr",
        article_ordinals={"der": "", "die": "", "das": "", "": "r", **dict.fromkeys(
            ("den", "dem", "des", "am", "im", "zum", "zur", "vom", "beim", "seit", "bis"), "n")},
    ),
    "fr": Locale(
        "fr",
        ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
         "octobre", "novembre", "décembre"),
        "pour cent", ("degré", "degrés"), _time("", "heure", "heures"), "{day} {month} {year}",
        first_day="premier", thousands=" ", one_before_noun="un", cents_joiner="et",
        time_unit="heures?", ordinal_marks="er|re|ère|ème|e",
    ),
    "es": Locale(
        "es",
        ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
         "octubre", "noviembre", "diciembre"),
        "por ciento", ("grado", "grados"), _time("y"), "{day} de {month} de {year}",
        one_hour="una", one_before_noun="un", cents_joiner="con", decimal_word=("punto", "coma"),
        ordinal_marks=ROMANCE_ORDINALS,
    ),
    "it": Locale(
        "it",
        ("gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
         "settembre", "ottobre", "novembre", "dicembre"),
        "per cento", ("grado", "gradi"), _time("e"), "{day} {month} {year}", first_day="primo",
        one_hour="una", one_before_noun="un", cents_joiner="e", ordinal_marks=ROMANCE_ORDINALS,
    ),
    "pt": Locale(
        "pt",
        ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro",
         "outubro", "novembro", "dezembro"),
        "por cento", ("grau", "graus"), _time("e"), "{day} de {month} de {year}",
        first_day="primeiro", one_hour="uma", cents_joiner="e", ordinal_marks=ROMANCE_ORDINALS,
    ),
    "nl": Locale(
        "nl",
        ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
         "oktober", "november", "december"),
        "procent", ("graad", "graden"), _time("", "uur"), "{day} {month} {year}",
        cents_joiner="en", time_unit="uur", ordinal_marks="ste|de|e",
    ),
}  # fmt: skip
REGIONAL_CODES = {"pt-br": "pt_BR"}
"""num2words' own variant of a regional language (Brazilian numbers: "dezesseis", not
"dezasseis")."""
EXTRA_CURRENCY_FORMS = {"BRL": (("real", "reais"), ("centavo", "centavos"))}
"""Money num2words has no names for in Portuguese, the language that says it most."""

_SPACES = re.compile(r"[ \t]+")
_CURRENCY_SIGNS = {"€": "EUR", "$": "USD", "£": "GBP", "R$": "BRL"}
_CURRENCY_CODES = ("EUR", "USD", "GBP", "BRL")


def _amount(thousands: str) -> str:
    """A number as the locale writes it: grouped thousands, a decimal comma."""
    group = re.escape(thousands)
    return rf"\d{{1,3}}(?:{group}\d{{3}})+(?:,\d+)?|\d+(?:,\d+)?"


def _value(written: str, thousands: str) -> Decimal | None:
    try:
        return Decimal(written.replace(thousands, "").replace(",", "."))
    except InvalidOperation:
        return None


class LocalizedNormalizer:
    """One language's steps, its patterns compiled once."""

    def __init__(self, language: str, locale: Locale):
        self.locale = locale
        self.code = REGIONAL_CODES.get(language, locale.code)
        self.currency_forms = {
            **EXTRA_CURRENCY_FORMS,
            **getattr(CONVERTER_CLASSES[self.code], "CURRENCY_FORMS", {}),
        }
        amount = _amount(locale.thousands)
        signs = "|".join(re.escape(sign) for sign in sorted(_CURRENCY_SIGNS, key=len, reverse=True))
        codes = "|".join(_CURRENCY_CODES)
        self._money_before = re.compile(rf"(?<![\w$])({signs})[ \t]?({amount})(?!,?\d)")
        self._money_after = re.compile(rf"(?<![\d,.])({amount})[ \t]?({signs}|{codes})(?!\w)")
        self._percent = re.compile(rf"(?<![\d,.])(-?)({amount})[ \t]?%")
        self._degrees = re.compile(rf"(?<![\d,.])(-?)({amount})[ \t]?°(?:[ \t]?([CF])(?!\w))?")
        self._date = re.compile(
            r"(?<![\d.,/-])(?:(\d{4})-(\d{2})-(\d{2})|(\d{1,2})([./-])(\d{1,2})\5(\d{4}))(?![\d/-])"
        )
        unit = rf"(?:[ \t]+{locale.time_unit}\b)?" if locale.time_unit else ""
        self._time = re.compile(
            rf"(?<![\d,.:])([01]?\d|2[0-3])(?::|[ \t]?h[ \t]?)([0-5]\d)(?![\d:]){unit}"
        )
        self._ordinal = (
            re.compile(rf"(?<![\d,.])(\d+)({locale.ordinal_marks})(?!\w)")
            if locale.ordinal_marks else None
        )  # fmt: skip
        articles = "|".join(article for article in locale.article_ordinals or () if article)
        self._article_ordinal = (
            re.compile(rf"\b({articles})[ \t]+(\d{{1,3}})\.(?=[ \t]+\w)", re.IGNORECASE)
            if articles else None
        )  # fmt: skip
        self._number = re.compile(rf"(?<![\d,.])(-?)({amount})(?![\d])")

    def __call__(self, text: str) -> str:
        for step in (drop_control_characters, unify_typography, strip_markup):
            text = step(text)
        text = self._date.sub(self._spoken_date, text)
        text = self._time.sub(self._spoken_time, text)
        text = self._money_before.sub(lambda m: self._money(m[2], m[1]), text)
        text = self._money_after.sub(lambda m: self._money(m[1], m[2]), text)
        text = self._percent.sub(self._spoken_percent, text)
        text = self._degrees.sub(self._spoken_degrees, text)
        if self._ordinal is not None:
            text = self._ordinal.sub(self._spoken_ordinal, text)
        if self._article_ordinal is not None:
            text = self._article_ordinal.sub(self._after_article, text)
        text = self._number.sub(self._spoken_number, text)
        return _SPACES.sub(" ", text).strip()

    def words(self, value: Decimal | int, **kind: str) -> str:
        return num2words(value, lang=self.code, **kind)

    def _year(self, year: int) -> str:
        try:
            return self.words(year, to="year")
        except (NotImplementedError, TypeError):  # a language num2words has no years for
            return self.words(year)

    def _spoken_date(self, match: re.Match[str]) -> str:
        if match[1]:
            year, month, day = int(match[1]), int(match[2]), int(match[3])
        else:
            day, month, year = int(match[4]), int(match[6]), int(match[7])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return match[0]
        locale = self.locale
        if locale.article_ordinals is not None:
            before = match.string[: match.start()].split()
            article = before[-1].lower() if before else ""
            ending = locale.article_ordinals.get(article, locale.article_ordinals[""])
            spoken_day = self.words(day, to="ordinal") + ending
        elif day == 1 and locale.first_day:
            spoken_day = locale.first_day
        else:
            spoken_day = self.words(day)
        months = locale.months
        return locale.date.format(day=spoken_day, month=months[month - 1], year=self._year(year))

    def _spoken_time(self, match: re.Match[str]) -> str:
        hour, minute = int(match[1]), int(match[2])
        hour_words = self.locale.one_hour if hour == 1 and self.locale.one_hour else None
        return self.locale.hours(hour_words or self.words(hour), self.words(minute), minute)

    def _money(self, written: str, currency: str) -> str:
        """An amount and its currency's names: num2words' own money reader treats an integer as
        cents and says "zero cents" for a whole amount, so it is spoken here from its names."""
        value = _value(written, self.locale.thousands)
        code = _CURRENCY_SIGNS.get(currency, currency)
        forms = self.currency_forms.get(code)
        if value is None or forms is None:
            return f"{written} {currency}"
        (unit, units), (cent, cents) = forms
        whole, hundredths = int(value), int((value - int(value)) * 100 + Decimal("0.5"))
        spoken = f"{self._counted(whole)} {unit if whole == 1 else units}"
        if hundredths:
            joiner = f" {self.locale.cents_joiner}" if self.locale.cents_joiner else ","
            spoken += f"{joiner} {self._counted(hundredths)} {cent if hundredths == 1 else cents}"
        return spoken

    def _counted(self, count: int) -> str:
        """``count`` before a noun: 1 is "ein", "un" where the language says so."""
        return (
            self.locale.one_before_noun
            if count == 1 and self.locale.one_before_noun
            else (self.words(count))
        )

    def _signed(self, match: re.Match[str]) -> Decimal | None:
        """The value of a match's sign (group 1) and amount (group 2)."""
        value = _value(match[2], self.locale.thousands)
        return -value if value is not None and match[1] else value

    def _spoken_percent(self, match: re.Match[str]) -> str:
        value = self._signed(match)
        if value is None:
            return match[0]
        return f"{self._number_words(value)} {self.locale.percent}"

    def _spoken_degrees(self, match: re.Match[str]) -> str:
        value = self._signed(match)
        if value is None:
            return match[0]
        one, many = self.locale.degrees
        scale = {"C": " Celsius", "F": " Fahrenheit"}.get(match[3] or "", "")
        return f"{self._number_words(value)} {one if abs(value) == 1 else many}{scale}"

    def _spoken_ordinal(self, match: re.Match[str]) -> str:
        spoken = self.words(int(match[1]), to="ordinal")
        mark = match[2]
        if mark.endswith("ª") and spoken.endswith("o"):  # "primera", "primeira"
            return spoken[:-1] + "a"
        if mark in ("re", "ère") and spoken == "premier":  # "la première fois"
            return "première"
        return spoken

    def _after_article(self, match: re.Match[str]) -> str:
        assert self.locale.article_ordinals is not None
        ending = self.locale.article_ordinals[match[1].lower()]
        return f"{match[1]} {self.words(int(match[2]), to='ordinal')}{ending}"

    def _spoken_number(self, match: re.Match[str]) -> str:
        value = self._signed(match)
        if value is None:
            return match[0]
        # Four digits from 1100 to 1999 in running text are nearly always a year.
        if re.fullmatch(r"1[1-9]\d\d", match[2]):
            return self._year(int(value))
        return self._number_words(value)

    def _number_words(self, value: Decimal) -> str:
        if value == value.to_integral_value():
            return self.words(int(value))
        spoken = self.words(value)
        if self.locale.decimal_word:  # "tres coma cinco" for the written "3,5"
            point, comma = self.locale.decimal_word
            spoken = spoken.replace(f" {point} ", f" {comma} ")
        return spoken


_normalizers: dict[str, LocalizedNormalizer] = {}


def normalizer_for(language: str) -> Callable[[str], str] | None:
    """The normalizer of ``language`` (an IETF tag: ``de``, ``pt-BR``); None where there is
    none, and the text is to be spoken as written."""
    tag = language.replace("_", "-").lower()
    base = tag.split("-")[0]
    locale = LOCALES.get(base)
    if locale is None:
        return None
    key = tag if tag in REGIONAL_CODES else base
    if key not in _normalizers:  # a race makes two alike: harmless
        _normalizers[key] = LocalizedNormalizer(key, locale)
    return _normalizers[key]
