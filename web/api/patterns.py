"""Regular-expression pieces that mean the same in Python and in ECMA-262.

OpenAPI documents patterns in ECMA-262's dialect, the server matches them with Python's ``re``:
a documented pattern may use only what both read alike. ``\\A``/``\\Z`` are anchors to Python but
the letters A and Z to ECMA-262, and the two ``\\s`` are different sets (Python's holds
``\\x1c-\\x1f`` and ``\\x85``, ECMA-262's ``\\ufeff``), so neither appears here.
"""

from __future__ import annotations

# Exactly the characters Python's str.strip() removes (str.isspace()), as class members.
STRIPPED_CHARS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
SPACE = f"[{STRIPPED_CHARS}]"
