"""gdb's expression syntax turned into C that pycparser parses.

gdb's C expressions are C plus a few forms of its own (GDB manual,
"Expressions" and "Value History"): ``$rax`` registers, ``$1`` ``$`` ``$$``
``$$2`` value history, ``$foo`` convenience variables, ``ARRAY@LEN``
artificial arrays, ``{TYPE} ADDR`` memory values and ``param@entry``
entry values. This module tokenises the text (strings and characters
kept intact), rewrites those forms into reserved C identifiers and
operators, and remembers where every token came from so that a syntax
error can quote the rest of the user's text as gdb does (``A syntax error
in expression, near `...'.``).

The rewriting is linear in the input and never evaluates anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kvmbench.errors import ExpressionError

#: Prefix of every identifier this module invents (not a valid C program name).
RESERVED = "__kvb_"
REGISTER_PREFIX = RESERVED + "reg_"
CONVENIENCE_PREFIX = RESERVED + "conv_"
HISTORY_ABSOLUTE_PREFIX = RESERVED + "hist_"
HISTORY_RELATIVE_PREFIX = RESERVED + "back_"
ENTRY_PREFIX = RESERVED + "entry_"

_SPACE = re.compile(r"\s+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*|\$\$?[0-9]*")
_PUNCT = re.compile(r"<<=|>>=|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|::|[-+*/%&|^~!<>=?:,.;()\[\]{}@]")
_INTEGER = re.compile(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)([uU]?[lL]{0,2}|[lL]{1,2}[uU])")
# What glibc's sscanf("%lg") consumes: it takes a dangling exponent letter
# ("1.5e" is 1.5), which gdb's parse_float then accepts.
_DECIMAL_FLOAT = re.compile(r"((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]*)?)([fFlL]?)")
_HEX_FLOAT = re.compile(r"(0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)([fFlL]?)")


@dataclass(frozen=True)
class Token:
    """One token of the user's text: its kind, text and offset there."""

    kind: str
    text: str
    offset: int


@dataclass
class Rewritten:
    """The C text pycparser parses, and how to map it back.

    ``origins[i]`` is the offset in the user's text of output character i.
    ``at_operators`` lists, for each ``<<`` in the output in order, whether
    it stands for gdb's ``@``. ``identifiers`` are the names the text uses
    (to declare the program's typedef names before parsing).
    """

    text: str
    origins: list[int]
    source: str
    at_operators: list[bool] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)

    def remainder(self, output_offset: int) -> str:
        """The user's text from where output offset ``output_offset`` came from."""
        if output_offset >= len(self.origins):
            return ""
        return self.source[self.origins[output_offset]:]


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, split as gdb's C lexer splits them (c-exp.y).

    Numbers are checked here, with gdb's messages (``Invalid number
    "08".``); so are quotes. A closing bracket without its opening one is
    gdb's ``Junk after end of expression.``
    """
    tokens = []
    position = 0
    depth = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char.isspace():
            position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
            continue
        if char.isdigit() or (char == "." and position + 1 < length and text[position + 1].isdigit()):
            end = _number_end(text, position)
            tokens.append(Token("number", text[position:end], position))
            position = end
            continue
        if char in "\"'" or (char == "L" and position + 1 < length and text[position + 1] in "\"'"):
            end = _quoted_end(text, position)
            kind = "string" if text[end - 1] == '"' else "char"
            tokens.append(Token(kind, text[position:end], position))
            position = end
            continue
        for kind, pattern in (("ident", _IDENT), ("dollar", _DOLLAR), ("punct", _PUNCT)):
            match = pattern.match(text, position)
            if match is not None:
                break
        else:
            # gdb's words (c-exp.y's lexer); unprintable characters escaped.
            shown = char if char.isprintable() else f"\\{ord(char):03o}"
            raise ExpressionError(f"Invalid character '{shown}' in expression.")
        value = match.group()
        if value in ("(", "["):
            depth += 1
        elif value in (")", "]"):
            depth -= 1
            if depth < 0:
                if not tokens:
                    raise ExpressionError(f"A syntax error in expression, near `{text[position:]}'.")
                raise ExpressionError("Junk after end of expression.")
        tokens.append(Token(kind, value, position))
        position = match.end()
    return tokens


def _number_end(text: str, start: int) -> int:
    """Where gdb's lexer ends a number: letters, digits, one '.', exponent signs."""
    position = start
    got_dot = got_e = got_p = False
    hex_number = text.startswith(("0x", "0X"), start)
    if hex_number:
        position += 2
    while position < len(text):
        char = text[position]
        previous = text[position - 1] if position > start else ""
        if not hex_number and not got_e and not got_p and char in "eE":
            got_dot = got_e = True
        elif not got_e and not got_p and char in "pP":
            got_dot = got_p = True
        elif not got_dot and char == ".":
            got_dot = True
        elif ((got_e and previous in "eE") or (got_p and previous in "pP")) and char in "+-":
            pass  # the exponent's sign
        elif not char.isalnum() or not char.isascii():
            break
        position += 1
    return position


def _quoted_end(text: str, start: int) -> int:
    """The end of a string or character literal starting at ``start``."""
    position = start + (1 if text[start] == "L" else 0)
    quote = text[position]
    position += 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == quote:
            return position + 1
        position += 1
    if quote == "'":
        raise ExpressionError("Unmatched single quote.")
    raise ExpressionError("Unterminated string in expression.")


def normalise_number(token: Token) -> str:
    """A gdb number token as a C literal pycparser takes (``0b101`` -> ``5``, ``1.5e`` -> ``1.5``)."""
    text = token.text
    match = _INTEGER.fullmatch(text)
    if match is not None:
        digits, suffix = match.groups()
        if digits[:2] in ("0b", "0B"):
            return str(int(digits[2:], 2)) + suffix
        return text
    hex_number = text[:2] in ("0x", "0X")
    is_float = "." in text or (not hex_number and any(c in "eE" for c in text)) or any(c in "pP" for c in text)
    if not is_float:
        raise ExpressionError(f'Invalid number "{text}".')
    for pattern in (_HEX_FLOAT, _DECIMAL_FLOAT):
        match = pattern.fullmatch(text)
        if match is not None:
            number, suffix = match.groups()
            if pattern is _DECIMAL_FLOAT:
                number = re.sub(r"[eE][+-]?$", "", number)
                if number.endswith("."):
                    number += "0"
                if number.startswith("."):
                    number = "0" + number
                if "." not in number and "e" not in number.lower():
                    number += ".0"
            return number + suffix
    raise ExpressionError(f'Invalid number "{text}".')


def rewrite(text: str, registers: frozenset[str]) -> Rewritten:
    """Rewrite gdb's own forms in ``text`` into C (see the module docstring).

    ``registers`` are the register names (without ``$``) the target knows;
    other ``$names`` are convenience variables.
    """
    tokens = tokenize(text)
    out: list[str] = []
    origins: list[int] = []
    at_operators: list[bool] = []
    identifiers: set[str] = set()
    braces: list[int] = []

    def emit(piece: str, offset: int) -> None:
        if out:
            out.append(" ")
            origins.append(offset)
        out.append(piece)
        origins.extend([offset] * len(piece))

    i = 0
    while i < len(tokens):
        token = tokens[i]
        kind, value = token.kind, token.text
        if kind == "ident" and value.startswith(RESERVED):
            raise ExpressionError(f'No symbol "{value}" in current context.')
        if kind == "ident" and i + 2 < len(tokens) and tokens[i + 1].text == "@" and tokens[i + 2].text == "entry":
            emit(ENTRY_PREFIX + value, token.offset)
            identifiers.add(value)
            i += 3
            continue
        if kind == "ident":
            identifiers.add(value)
            emit(value, token.offset)
        elif kind == "number":
            emit(normalise_number(token), token.offset)
        elif kind == "char":
            body = value[1:-1] if value[0] == "'" else value[2:-1]
            if not body:
                raise ExpressionError("A character constant must contain at least one character.")
            if len(body) > 1 and not (body[0] == "\\" and _single_escape(body)):
                raise ExpressionError("Invalid character constant.")
            emit(value, token.offset)
        elif kind == "dollar":
            emit(_dollar_identifier(value, registers), token.offset)
        elif value == "@":
            emit("<<", token.offset)
            at_operators.append(True)
        elif value == "<<":
            emit("<<", token.offset)
            at_operators.append(False)
        elif value == "{":
            # gdb's {TYPE} ADDR is *(TYPE *) ADDR (UNOP_MEMVAL).
            braces.append(token.offset)
            emit("*(", token.offset)
        elif value == "}":
            if not braces:
                raise ExpressionError(f"A syntax error in expression, near `{text[token.offset:]}'.")
            braces.pop()
            emit("*)", token.offset)
        elif value == "::":
            raise ExpressionError(f"A syntax error in expression, near `{text[token.offset:]}'.")
        else:
            emit(value, token.offset)
        i += 1
    if braces:
        raise ExpressionError("A syntax error in expression, near `'.")
    return Rewritten("".join(out), origins, text, at_operators, identifiers)


def _dollar_identifier(text: str, registers: frozenset[str]) -> str:
    """``$rax`` -> register, ``$`` ``$N`` ``$$`` ``$$N`` -> history, ``$foo`` -> convenience."""
    if text == "$":
        return HISTORY_RELATIVE_PREFIX + "0"
    if text == "$$":
        return HISTORY_RELATIVE_PREFIX + "1"
    if text.startswith("$$"):
        return HISTORY_RELATIVE_PREFIX + _history_number(text[2:])
    name = text[1:]
    if name.isdigit():
        return HISTORY_ABSOLUTE_PREFIX + _history_number(name)
    if name in registers:
        return REGISTER_PREFIX + name
    return CONVENIENCE_PREFIX + name


def _history_number(digits: str) -> str:
    """A history index, capped: no history is longer than 10**18 values."""
    digits = digits.lstrip("0") or "0"
    return digits if len(digits) <= 18 else "1" + "0" * 18


def nesting_depth(tokens: list[Token]) -> int:
    """How deeply the expression nests: brackets plus runs of prefix operators.

    The C parser and the evaluator recurse once per level; deeper input is
    refused before parsing (gdb's own parser runs out of stack too).
    """
    depth = 0
    deepest = 0
    run = 0
    right_associative = 0  # a = b = c and a ? b : c ? d : e nest to the right
    for token in tokens:
        text = token.text
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        if text in ("-", "+", "!", "~", "*", "&", "++", "--", "(", "sizeof"):
            run += 1
        elif token.kind in ("ident", "number", "dollar", "string", "char"):
            run = 0
        if text == "?" or (text.endswith("=") and text not in ("==", "!=", "<=", ">=")):
            right_associative += 1
        deepest = max(deepest, depth + run)
    return deepest + right_associative


def _single_escape(body: str) -> bool:
    """Whether an escape sequence ``body`` (after a backslash) is one character."""
    return bool(re.fullmatch(r"\\(?:[0-7]{1,3}|x[0-9a-fA-F]+|.)", body, re.DOTALL))
