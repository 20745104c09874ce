"""The order gdb lists a block's symbols in (``info locals``, ``info scope``).

A function's own block keeps declaration order (a linear dictionary); a
nested block is a hashed dictionary (gdb's dictionary.c: n/5 + 1 buckets,
default_search_name_hash), iterated bucket by bucket.
"""

from __future__ import annotations

from kvmbench.symbols.units import Scope, Variable


def block_variables(block: Scope) -> list[Variable]:
    """The block's variables in gdb's iteration order."""
    return list(block.variables) if block.is_function else gdb_hashed_order(block.variables)


def gdb_symbol_hash(name: str) -> int:
    """gdb's default_search_name_hash for a C name (dictionary.c), as a 32-bit value."""
    def hash_iw(text: str) -> int:
        value = 0
        for char in text:
            if char == "(":
                break
            if not char.isspace():
                value = _hash_next(value, char)
        return value

    if name.startswith("_") and not name.startswith("_ada_"):
        return hash_iw(name)
    string = name[5:] if name.startswith("_ada_") else name
    value = 0
    i = 0
    start = 0
    while i < len(string):
        char = string[i]
        if char in "$.X":
            if i == start:
                return hash_iw(name)
            return value
        if char in " (":
            return hash_iw(name)
        if char == "_" and i + 1 < len(string) and string[i + 1] == "_" and i != 0:
            following = string[i + 2] if i + 2 < len(string) else ""
            if not ("a" <= following <= "z") and following != "O":
                return value
            value = 0
            i += 2
            continue
        if char == "T" and string[i:] == "TKB":
            return value
        value = _hash_next(value, char)
        i += 1
    return value


def _hash_next(value: int, char: str) -> int:
    # SYMBOL_HASH_NEXT: hash * 67 + tolower(c) - 113, in 32-bit unsigned arithmetic.
    return (value * 67 + ord(char.lower()) - 113) & 0xFFFFFFFF


def gdb_hashed_order(variables: list[Variable]) -> list[Variable]:
    """The order gdb iterates a nested block's hashed dictionary in."""
    buckets_count = len(variables) // 5 + 1  # DICT_HASHTABLE_SIZE
    buckets: list[list[Variable]] = [[] for _ in range(buckets_count)]
    # Symbols are inserted last-declared first, each at its bucket's head,
    # so a bucket lists them in declaration order.
    for variable in variables:
        buckets[gdb_symbol_hash(variable.name) % buckets_count].append(variable)
    return [variable for bucket in buckets for variable in bucket]
