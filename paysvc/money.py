"""Money in integer minor units; currency exponents from ISO 4217."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MAX_AMOUNT = 99_999_999

# Exponent per currency (digits after the decimal point). Default 2 for the rest of CURRENCIES.
_EXPONENTS = {
    **dict.fromkeys(
        "bif clp djf gnf isk jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split(), 0
    ),
    **dict.fromkeys("bhd iqd jod kwd lyd omr tnd".split(), 3),
}
CURRENCIES = frozenset(
    """aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf
    gtq gyd hkd hnl htg huf idr ils inr iqd isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp
    lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr
    pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb
    tjs tnd top try ttd twd tzs uah ugx usd uyu uzs vnd vuv wst xaf xcd xof xpf yer zar
    zmw""".split()
)


def normalize_currency(code: str) -> str:
    """Accept any case; raise ValueError for anything that is not a supported ISO 4217 code."""
    lowered = code.strip().lower()
    if lowered not in CURRENCIES:
        raise ValueError(f"unsupported currency {code!r}")
    return lowered


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.lower(), 2)


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise TypeError("Money.minor must be an int")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-exponent(self.currency))

    def display(self) -> str:
        """`19.99 USD`, `500 JPY`: for people (CLI tables), never for arithmetic."""
        places = exponent(self.currency)
        return f"{self.to_decimal():.{places}f} {self.currency.upper()}"
