"""Schema-constrained decoding without a grammar library (every caption must validate against the SkyCaptioner schema).

The caption schema (``models.caption_schema``) is small and bounded: every string has a
``maxLength``, every array a ``maxItems``, nothing is recursive. So it compiles to a deterministic
pushdown walker over characters, and decoding is a walk: the tokens allowed next are the paths of
the vocabulary's character trie that the walker accepts from its state (memoised per state), and
EOS is allowed exactly when the JSON value is complete. The output is compact JSON with every
property present, in schema order; string characters are printable ASCII without ``"`` or ``\\``,
so there are no escapes and ``json.loads`` returns exactly the characters counted against
``maxLength``. Because every token consumes at least one character, ``max_chars()`` + 1 new tokens
always suffice: even a randomly initialised model finishes a valid caption.

Why our own walker rather than xgrammar or lm-format-enforcer: xgrammar pulls triton (a large CUDA
package) into the CPU image, and lm-format-enforcer allows free whitespace and does not bound its
output by the schema, so termination would rest on the model. This is ~200 lines, works with any
tokenizer (tokens are handled by their decoded text), and its guarantees are checked by tests.
"""

from __future__ import annotations

import bisect
import json

import torch

SAFE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}  # string content
JSON_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))  # every character the walker can emit
DEFAULT_STRING_CAP = 256  # strings without maxLength are capped: output must stay bounded

State = tuple  # a stack of frames, top last; hashable (memo key)


class SchemaWalker:
    """Compiles a JSON Schema (objects, arrays, strings, enums/consts, booleans, null, anyOf,
    $ref) into nodes; ``advance(state, ch)`` is the next state or None where ``ch`` is not allowed.

    ``string_cap`` tightens every string's maxLength (a shorter caption is still valid): in the
    tiny profile it bounds how long a random model talks."""

    def __init__(self, schema: dict, string_cap: int | None = None):
        self.defs = schema.get("$defs", {})
        self.string_cap = string_cap
        self.nodes: list[tuple] = []
        self.root = self._compile(schema)

    # --- compile ---------------------------------------------------------------------------
    def _add(self, node: tuple) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def _compile(self, s: dict) -> int:
        if "$ref" in s:
            return self._compile(self.defs[s["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in s or "oneOf" in s:
            return self._add(("alt", tuple(self._compile(o) for o in s.get("anyOf", s.get("oneOf")))))
        if "enum" in s or "const" in s:
            values = s["enum"] if "enum" in s else [s["const"]]
            return self._add(("enum", tuple(json.dumps(v, separators=(",", ":")) for v in values)))
        kind = s.get("type")
        if isinstance(kind, list):
            return self._add(("alt", tuple(self._compile({**s, "type": k}) for k in kind)))
        if kind == "object":
            items, sep = [], "{"
            for key, sub in s.get("properties", {}).items():
                items += [("L", f"{sep}{json.dumps(key)}:", 0), ("N", self._compile(sub))]
                sep = ","
            items.append(("L", "}" if sep == "," else "{}", 0))
            return self._add(("seq", tuple(reversed(items))))
        if kind == "array":
            return self._add(("array", self._compile(s.get("items", {})), s.get("minItems", 0), s["maxItems"]))
        if kind == "string":
            cap = s.get("maxLength", DEFAULT_STRING_CAP)
            cap = min(cap, self.string_cap) if self.string_cap is not None else cap
            return self._add(("string", min(s.get("minLength", 0), cap), cap))
        if kind == "boolean":
            return self._add(("enum", ("true", "false")))
        if kind == "null":
            return self._add(("enum", ("null",)))
        raise NotImplementedError(f"schema construct not supported by the constrained decoder: {s}")

    # --- walk ------------------------------------------------------------------------------
    def start(self) -> State:
        return (("N", self.root),)

    def advance(self, state: State, ch: str) -> State | None:
        while state:
            top, rest = state[-1], state[:-1]
            kind = top[0]
            if kind == "L":
                text, pos = top[1], top[2]
                if text[pos] != ch:
                    return None
                return rest + ((("L", text, pos + 1),) if pos + 1 < len(text) else ())
            if kind == "S":
                need, left = top[1], top[2]
                if ch == '"' and need == 0:
                    return rest
                if ch in SAFE_CHARS and left > 0:
                    return rest + (("S", max(need - 1, 0), left - 1),)
                return None
            if kind == "E":
                cands = tuple(c for c in top[1] if c[top[2]] == ch)
                if not cands:
                    return None
                done = any(len(c) == top[2] + 1 for c in cands)  # JSON literals: no proper prefixes
                return rest if done else rest + (("E", cands, top[2] + 1),)
            if kind == "A0":  # just after "["
                _, item, lo, hi = top
                if ch == "]" and lo == 0:
                    return rest
                state = rest + (("A", item, 1, lo, hi), ("N", item))
                continue
            if kind == "A":  # after an item
                _, item, count, lo, hi = top
                if ch == "," and count < hi:
                    return rest + (("A", item, count + 1, lo, hi), ("N", item))
                return rest if ch == "]" and count >= lo else None
            node = self.nodes[top[1]]  # "N": expand, then retry the same character
            if node[0] == "alt":
                return next((s for s in (self.advance(rest + (("N", o),), ch) for o in node[1]) if s is not None), None)
            state = rest + self._expand(node)
        return None

    @staticmethod
    def _expand(node: tuple) -> State:
        if node[0] == "seq":
            return node[1]
        if node[0] == "enum":
            return (("E", node[1], 0),)
        if node[0] == "string":
            return (("S", node[1], node[2]), ("L", '"', 0))
        return (("A0", node[1], node[2], node[3]), ("L", "[", 0))  # array

    def feed(self, state: State, text: str) -> State | None:
        for ch in text:
            state = self.advance(state, ch)
            if state is None:
                return None
        return state

    def max_chars(self, node_id: int | None = None) -> int:
        """Longest output the schema allows (bounds the number of new tokens)."""
        node = self.nodes[self.root if node_id is None else node_id]
        if node[0] == "seq":
            return sum(len(f[1]) if f[0] == "L" else self.max_chars(f[1]) for f in node[1])
        if node[0] == "enum":
            return max(map(len, node[1]))
        if node[0] == "string":
            return node[2] + 2
        if node[0] == "alt":
            return max(self.max_chars(o) for o in node[1])
        return 2 + node[3] * (self.max_chars(node[1]) + 1)  # array


class TokenConstraint:
    """The walker lifted to a vocabulary: ``allowed(state)`` = token ids whose text the walker
    accepts from ``state`` (plus EOS once the value is complete)."""

    def __init__(self, walker: SchemaWalker, token_texts: list[str | None], eos_ids: list[int], vocab_size: int):
        self.walker, self.eos_ids, self.vocab_size = walker, list(eos_ids), vocab_size
        self.texts = token_texts
        usable = [(tid, t) for tid, t in enumerate(token_texts) if t and set(t) <= JSON_CHARS]
        self.trie = self._trie(usable)
        # Inside a string, a token of plain string characters fits iff it is short enough: those
        # come from a length-sorted list; only tokens holding a quote (or backslash) are walked.
        # This keeps a 150k-token vocabulary cheap (most tokens are plain text).
        plain = sorted((len(t), tid) for tid, t in usable if set(t) <= SAFE_CHARS)
        self.plain_lengths = [n for n, _ in plain]
        self.plain_ids = [tid for _, tid in plain]
        self.quote_trie = self._trie([(tid, t) for tid, t in usable if not set(t) <= SAFE_CHARS])
        self.longest = max((len(t) for _, t in usable), default=1)
        self._memo: dict[State, torch.Tensor] = {}

    @staticmethod
    def _trie(tokens: list[tuple[int, str]]) -> dict:
        root: dict = {}
        for tid, text in tokens:
            node = root
            for ch in text:
                node = node.setdefault(ch, {})
            node.setdefault(None, []).append(tid)  # key None: tokens ending here
        return root

    def _key(self, state: State) -> State:
        # Inside a string only the remaining room matters, and only up to the longest token.
        if state and state[-1][0] == "S":
            _, need, left = state[-1]
            return state[:-1] + (("S", min(need, self.longest), min(left, self.longest)),)
        return state

    def _walk(self, trie: dict, state: State) -> list[int]:
        found, stack = [], [(trie, state)]
        while stack:
            node, st = stack.pop()
            for ch, child in node.items():
                if ch is None:
                    continue
                nxt = self.walker.advance(st, ch)
                if nxt is not None:
                    found.extend(child.get(None, ()))
                    stack.append((child, nxt))
        return found

    def allowed(self, state: State) -> torch.Tensor:
        key = self._key(state)
        ids = self._memo.get(key)
        if ids is None:
            if not key:
                found = list(self.eos_ids)
            elif key[-1][0] == "S":
                found = self.plain_ids[:bisect.bisect_right(self.plain_lengths, key[-1][2])] + self._walk(self.quote_trie, key)
            else:
                found = self._walk(self.trie, key)
            ids = self._memo[key] = torch.tensor(sorted(found), dtype=torch.long)
        return ids

    def step(self, state: State, token_id: int) -> State | None:
        text = self.texts[token_id] if token_id < len(self.texts) else None
        return None if not text else self.walker.feed(state, text)

    def decode(self, token_ids: list[int]) -> str:
        return "".join(self.texts[t] or "" for t in token_ids if t not in self.eos_ids)
