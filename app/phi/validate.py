"""Check digits and validity rules that turn a regex hit into an identifier."""

import datetime as dt
import ipaddress


def digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def luhn_ok(number: str) -> bool:
    """Luhn (mod 10) check over the digits of ``number`` (payment cards, IMEI, NPI)."""
    ds = digits(number)
    if len(ds) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(ds)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def npi_ok(number: str) -> bool:
    """US National Provider Identifier: 10 digits, Luhn over the prefix 80840."""
    ds = digits(number)
    return len(ds) == 10 and ds[0] in "12" and luhn_ok("80840" + ds)


def ssn_plausible(area: str, group: str, serial: str) -> bool:
    """SSA rules: area 000 and 666 are never issued, nor group 00 nor serial 0000.

    Areas 900-999 are never SSNs but are ITINs (also identifiers), so they pass.
    """
    return area not in ("000", "666") and group != "00" and serial != "0000"


def ip_ok(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_VIN_VALUES = {
    **{str(i): i for i in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin.upper(), _VIN_WEIGHTS, strict=True))
    r = total % 11
    return "X" if r == 10 else str(r)


def vin_ok(vin: str) -> bool:
    """17 characters without I, O, Q and a valid North American check digit (position 9)."""
    v = vin.upper()
    if len(v) != 17 or any(c not in _VIN_VALUES for c in v):
        return False
    return vin_check_digit(v) == v[8]


def dea_ok(value: str) -> bool:
    """DEA registration number: 2 letters, 7 digits, the last a check digit."""
    v = value.upper()
    if len(v) != 9 or not v[0].isalpha() or not (v[1].isalpha() or v[1] == "9"):
        return False
    ds = v[2:]
    if not ds.isdigit():
        return False
    n = [int(c) for c in ds]
    check = (n[0] + n[2] + n[4] + 2 * (n[1] + n[3] + n[5])) % 10
    return check == n[6]


def iban_ok(value: str) -> bool:
    v = "".join(value.split()).upper()
    if not (15 <= len(v) <= 34) or not v[:2].isalpha() or not v[2:4].isdigit():
        return False
    moved = v[4:] + v[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def date_ok(year: int | None, month: int, day: int | None) -> bool:
    """A real calendar date (a missing year is checked against a leap year)."""
    if not 1 <= month <= 12:
        return False
    if day is None:
        return True
    y = 2000 if year is None else year
    try:
        dt.date(y, month, day)
    except ValueError:
        return False
    return True
