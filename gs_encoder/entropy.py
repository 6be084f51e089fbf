"""Adaptive binary range coding of integer columns: the entropy coder of `.gsq` (gs_encoder/codec.py).

The coder is the carry-propagating range coder of LZMA (32-bit range, 11-bit probabilities that adapt by
1/32 of the error after each bit), written here for integer symbols:

- an unsigned value v is binarised as Exp-Golomb: its class k = bit_length(v) in unary (each position of
  the unary code has its own adaptive probability), then the k − 1 bits under the leading one, the top
  `TOP_BITS` of them modelled per class, the rest sent at probability ½;
- a signed value is its magnitude, then (when non-zero) a modelled sign bit;
- every column has its own model, and within a column the class of the previous value picks one of three
  context sets, so runs of small or of large values are cheap.

Plain Python, exact integer arithmetic: encoder and decoder agree bit for bit on every platform.
"""

from __future__ import annotations

__all__ = ["Decoder", "Encoder", "Model", "DamagedStream"]

_PROB_BITS = 11
_ONE = 1 << _PROB_BITS
_HALF = _ONE >> 1
_MOVE = 5
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
MAX_CLASS = 40  # values up to 2^40 − 1 (the unary class code of the largest ends without its 0)
TOP_BITS = 2
_SETS = 3  # context sets, chosen by the previous value's class
_LOOKAHEAD = 8  # zero bytes the decoder may read past the end: the stripped tail and its 4-byte window


class DamagedStream(ValueError):
    """The stream ended early or decodes to a value no encoder writes."""


def _context_set(k: int) -> int:
    return 0 if k == 0 else 1 if k <= 2 else 2


class Model:
    """Adaptive probabilities of one column: unary class positions, top mantissa bits, signs."""

    __slots__ = ("prefix", "mantissa", "sign", "prev")

    def __init__(self) -> None:
        self.prefix = [[_HALF] * (MAX_CLASS + 1) for _ in range(_SETS)]
        self.mantissa = [[_HALF] * (1 << TOP_BITS) for _ in range(MAX_CLASS + 1)]
        self.sign = [_HALF] * _SETS
        self.prev = 0


class Encoder:
    """Range encoder; `finish()` returns the bytes."""

    def __init__(self) -> None:
        self.low = 0
        self.range = _MASK32
        self.cache = 0
        self.pending = 0  # bytes held back: the cache byte and 0xFF bytes a carry may still change
        self.out = bytearray()
        self.started = False

    def _shift(self) -> None:
        low = self.low
        if low < 0xFF000000 or low > _MASK32:
            carry = low >> 32
            if self.started:
                self.out.append((self.cache + carry) & 0xFF)
            self.started = True
            self.out.extend(bytes([(0xFF + carry) & 0xFF]) * self.pending)
            self.pending = 0
            self.cache = (low >> 24) & 0xFF
        else:
            self.pending += 1
        self.low = (low & 0x00FFFFFF) << 8

    def bit(self, probs: list[int], i: int, b: int) -> None:
        p = probs[i]
        bound = (self.range >> _PROB_BITS) * p
        if b:
            self.low += bound
            self.range -= bound
            probs[i] = p - (p >> _MOVE)
        else:
            self.range = bound
            probs[i] = p + ((_ONE - p) >> _MOVE)
        while self.range < _TOP:
            self.range <<= 8
            self._shift()

    def direct(self, value: int, nbits: int) -> None:
        """nbits raw bits of value, most significant first, at probability ½."""
        for j in range(nbits - 1, -1, -1):
            self.range >>= 1
            if (value >> j) & 1:
                self.low += self.range
            while self.range < _TOP:
                self.range <<= 8
                self._shift()

    def uint(self, model: Model, v: int) -> None:
        k = v.bit_length()
        if k > MAX_CLASS:
            raise ValueError(f"value {v} needs more than {MAX_CLASS} bits")
        prefix = model.prefix[_context_set(model.prev)]
        for j in range(k):
            self.bit(prefix, j, 1)
        if k < MAX_CLASS:
            self.bit(prefix, k, 0)
        if k > 1:
            rest = k - 1
            top = min(TOP_BITS, rest)
            node, probs = 1, model.mantissa[k]
            for j in range(rest - 1, rest - 1 - top, -1):
                b = (v >> j) & 1
                self.bit(probs, node, b)
                node = 2 * node + b
            self.direct(v, rest - top)
        model.prev = k

    def sint(self, model: Model, v: int) -> None:
        ctx = _context_set(model.prev)
        self.uint(model, abs(v))
        if v:
            self.bit(model.sign, ctx, int(v < 0))

    def finish(self) -> bytes:
        # end on the value of the final interval with the most trailing zero bits, and leave its trailing
        # zero bytes out: the decoder reads missing bytes as zeros
        for k in range(32, -1, -1):
            mask = (1 << k) - 1
            v = (self.low + mask) & ~mask
            if v < self.low + self.range:
                self.low = v
                break
        for _ in range(5):
            self._shift()
        out = bytes(self.out)
        tail = len(out) - len(out.rstrip(b"\0"))
        return out[: len(out) - min(tail, _LOOKAHEAD - 4)]


class Decoder:
    """Range decoder over `data` (as written by Encoder.finish)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 4
        self.range = _MASK32
        self.code = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
        self.overrun = 0

    def _next(self) -> int:
        if self.pos < len(self.data):
            b = self.data[self.pos]
        else:
            self.overrun += 1
            if self.overrun > _LOOKAHEAD:
                raise DamagedStream("the stream ended before its last value")
            b = 0
        self.pos += 1
        return b

    def bit(self, probs: list[int], i: int) -> int:
        p = probs[i]
        bound = (self.range >> _PROB_BITS) * p
        if self.code < bound:
            self.range = bound
            probs[i] = p + ((_ONE - p) >> _MOVE)
            b = 0
        else:
            self.code -= bound
            self.range -= bound
            probs[i] = p - (p >> _MOVE)
            b = 1
        while self.range < _TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self._next()) & _MASK32
        return b

    def direct(self, nbits: int) -> int:
        v = 0
        for _ in range(nbits):
            self.range >>= 1
            b = int(self.code >= self.range)
            if b:
                self.code -= self.range
            v = (v << 1) | b
            while self.range < _TOP:
                self.range <<= 8
                self.code = ((self.code << 8) | self._next()) & _MASK32
        return v

    def uint(self, model: Model) -> int:
        prefix = model.prefix[_context_set(model.prev)]
        k = 0
        while k < MAX_CLASS and self.bit(prefix, k):
            k += 1
        v = 1 if k else 0
        if k > 1:
            rest = k - 1
            top = min(TOP_BITS, rest)
            node, probs = 1, model.mantissa[k]
            for _ in range(top):
                b = self.bit(probs, node)
                v = (v << 1) | b
                node = 2 * node + b
            v = (v << (rest - top)) | self.direct(rest - top)
        model.prev = k
        return v

    def sint(self, model: Model) -> int:
        ctx = _context_set(model.prev)
        m = self.uint(model)
        return -m if m and self.bit(model.sign, ctx) else m
