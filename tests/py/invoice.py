#!/usr/bin/env python3
"""Decodes a BOLT 11 invoice with pyln-proto, an implementation independent of ours, for the
whole-system tests (tests/tests/node.rs).

Usage: ``invoice.py <bolt11>``. On success it prints one JSON object on stdout and exits 0:

- ``pubkey``: the payee as pyln-proto's ``Invoice.decode`` found it (from the ``n`` field
  when there is one, checked against the signature; otherwise recovered from the signature);
- ``recovered``: the public key recovered from the signature over the human-readable part
  and the data, computed here with coincurve whether or not there is an ``n`` field;
- ``has_n``: whether the invoice carries an ``n`` field;
- ``payment_hash``, ``amount_msat`` (null without an amount), ``currency``, ``description``,
  ``date``, ``min_final_cltv_expiry``, ``unknown_tags`` (their letters).

A decoding error exits non-zero with the reason on stderr.
"""

import json
import sys
from decimal import Decimal

import bitstring
import coincurve
from pyln.proto.invoice import Invoice, bech32_decode, pull_tagged, u5_to_bitarray

# 1 BTC in millisatoshis: pyln-proto gives amounts in BTC as a Decimal.
MSAT_PER_BTC = Decimal(10) ** 11


def recover(bolt11):
    """The key recovered from the invoice's signature, and whether it has an ``n`` field."""
    hrp, data = bech32_decode(bolt11)
    bits = u5_to_bitarray(data)
    sig = bits[-65 * 8:].tobytes()
    body = bits[: -65 * 8]
    # The signature covers SHA-256(hrp as bytes || data bits padded to bytes).
    signed = hrp.encode("ascii") + body.tobytes()
    key = coincurve.PublicKey.from_signature_and_message(sig, signed)
    # Walk the tagged fields for an `n`.
    stream = bitstring.ConstBitStream(body)
    stream.read(35)  # timestamp
    has_n = False
    while stream.pos != stream.len:
        tag, _, stream = pull_tagged(stream)
        has_n = has_n or tag == "n"
    return key.format().hex(), has_n


def main():
    if len(sys.argv) != 2:
        print("usage: invoice.py <bolt11>", file=sys.stderr)
        return 2
    bolt11 = sys.argv[1].strip()
    try:
        inv = Invoice.decode(bolt11)
        recovered, has_n = recover(bolt11)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the answer
        print(f"cannot decode: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    amount_msat = None
    if inv.amount is not None:
        msat = Decimal(inv.amount) * MSAT_PER_BTC
        if msat != msat.to_integral_value():
            print(f"amount {inv.amount} BTC is not a whole msat", file=sys.stderr)
            return 1
        amount_msat = int(msat)
    descriptions = [v for (k, v) in inv.tags if k == "d"]
    out = {
        "pubkey": inv.pubkey.format().hex(),
        "recovered": recovered,
        "has_n": has_n,
        "payment_hash": inv.paymenthash.hex() if inv.paymenthash else None,
        "amount_msat": amount_msat,
        "currency": inv.currency,
        "description": descriptions[0] if descriptions else None,
        "date": inv.date,
        "min_final_cltv_expiry": inv.min_final_cltv_expiry,
        "unknown_tags": sorted({t for (t, _) in inv.unknown_tags}),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
