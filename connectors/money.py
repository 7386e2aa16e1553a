"""Currency minor units, shared by the canonical order and the connectors (which must not
import the broker): how many decimals an amount in a currency may carry."""

from __future__ import annotations

# ISO 4217 minor units, from the SIX maintenance-agency list (list-one.xml, "CcyMnrUnts").
_MINOR_UNITS = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                     "UYI", "VND", "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


def minor_units(currency: str) -> int:
    """Decimal places the currency allows (ISO 4217 exponent); 2 for codes not listed."""
    return _MINOR_UNITS.get(currency.upper(), 2)
