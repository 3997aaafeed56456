"""The public value types of the PHI detector: :class:`PhiType` and :class:`Span`."""

from dataclasses import dataclass
from enum import StrEnum


class PhiType(StrEnum):
    """The HIPAA Safe Harbor identifier (45 CFR 164.514(b)(2)) that a span holds.

    One member per text-detectable identifier. Full-face photographs are images, not
    text, and have no member: see ``app/PHI.md``.
    """

    NAME = "NAME"  # (A) names of the individual, relatives, employers, household members
    ADDRESS = "ADDRESS"  # (B) street address, city, county, other subdivision below a state
    ZIP = "ZIP"  # (B) ZIP codes
    DATE = "DATE"  # (C) all elements of dates except the year
    AGE = "AGE"  # (C) ages over 89
    PHONE = "PHONE"  # (D)
    FAX = "FAX"  # (E)
    EMAIL = "EMAIL"  # (F)
    SSN = "SSN"  # (G) social security numbers (and ITIN-shaped numbers)
    MRN = "MRN"  # (H) medical record numbers
    HEALTH_PLAN = "HEALTH_PLAN"  # (I) health plan beneficiary numbers
    ACCOUNT = "ACCOUNT"  # (J) account numbers, payment cards, IBANs
    LICENSE = "LICENSE"  # (K) certificate / licence numbers
    VEHICLE = "VEHICLE"  # (L) vehicle identifiers and serial numbers, licence plates
    DEVICE = "DEVICE"  # (M) device identifiers and serial numbers
    URL = "URL"  # (N) web URLs
    IP = "IP"  # (O) IP addresses
    BIOMETRIC = "BIOMETRIC"  # (P) biometric identifiers written as text
    ID = "ID"  # (R) any other unique identifying number, characteristic or code


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Characters ``text[start:end]`` hold an identifier of ``type``.

    Holds offsets only, never the text itself, so a span can be logged safely.
    """

    start: int
    end: int
    type: PhiType
