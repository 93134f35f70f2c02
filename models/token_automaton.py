"""The schema walker compiled over a vocabulary into a token automaton, and the logits processor that
decodes with it (``models.json_constrained`` holds the walker and its per-state token sets).

The walker advances one character at a time (a Python loop per character of every generated token) and a
state's allowed tokens come from a walk of the vocabulary's trie. Both depend only on the schema, the
tokenizer and the state, so they are computed once per state and transition and shared by every
generation in the process: decoding a token is then a dict lookup and a row of a precomputed mask.
"""

from __future__ import annotations

import hashlib
import json

import torch

from models.json_constrained import SchemaWalker, State, TokenConstraint


class TokenAutomaton:
    """The walker lifted to a vocabulary and compiled once per schema + tokenizer (:func:`automaton_for`):
    walker states are numbered as they are reached; each state's allowed-token mask (bool, vocab) is
    computed once (shared by the states whose remaining room is the same, ``TokenConstraint._key``) and each
    transition ``(state, token) -> state`` once, so decoding costs a table lookup per token instead of a
    character walk and a fresh mask. :meth:`compile` reaches every state up front (small vocabularies).
    State :data:`DEAD` (a complete value, or a rejected token) allows only EOS."""

    DEAD = 0

    def __init__(self, constraint: TokenConstraint):
        self.constraint = constraint
        eos_only = torch.zeros(constraint.vocab_size, dtype=torch.bool)
        eos_only[constraint.eos_ids] = True
        self.states: list[State | None] = [None]
        self.masks: list[torch.Tensor] = [eos_only]
        self._ids: dict[State, int] = {}
        self._by_key: dict[State, torch.Tensor] = {}
        self._next: dict[tuple[int, int], int] = {}
        self.start = self.state_id(constraint.walker.start())

    def state_id(self, state: State | None) -> int:
        if state is None or not state:  # rejected, or complete: EOS only
            return self.DEAD
        sid = self._ids.get(state)
        if sid is None:
            key = self.constraint._key(state)
            mask = self._by_key.get(key)
            if mask is None:
                mask = self._by_key[key] = torch.zeros(self.constraint.vocab_size, dtype=torch.bool)
                mask[self.constraint.allowed(state)] = True
            sid = self._ids[state] = len(self.states)
            self.states.append(state)
            self.masks.append(mask)
        return sid

    def step(self, sid: int, token: int) -> int:
        nxt = self._next.get((sid, token))
        if nxt is None:
            state = self.states[sid]
            nxt = self._next[(sid, token)] = self.DEAD if state is None else self.state_id(self.constraint.step(state, token))
        return nxt

    def compile(self, limit: int = 100_000) -> int:
        """Every state reachable from the start (at most ``limit``), every transition taken: returns the count."""
        todo, seen = [self.start], {self.start}
        while todo and len(self.states) < limit:
            sid = todo.pop()
            for token in self.masks[sid].nonzero().flatten().tolist():
                if token not in self.constraint.eos_ids and (nxt := self.step(sid, token)) not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return len(self.states) - 1


_AUTOMATA: dict[str, TokenAutomaton] = {}


def automaton_for(walker: SchemaWalker, token_texts: list[str | None], eos_ids: list[int], vocab_size: int) -> TokenAutomaton:
    """The automaton of this walker's nodes over this vocabulary, built once per process and shared (a
    retry, a second captioner in the same actor, reuse its states)."""
    key = hashlib.sha256(json.dumps([walker.nodes, walker.root, token_texts, list(eos_ids), vocab_size]).encode()).hexdigest()
    if key not in _AUTOMATA:
        _AUTOMATA[key] = TokenAutomaton(TokenConstraint(walker, token_texts, eos_ids, vocab_size))
    return _AUTOMATA[key]


class ConstrainedLogits:
    """A transformers ``LogitsProcessor``: masks every token the walker would reject. One automaton state
    per batch row, advanced by the token generated since the previous call."""

    def __init__(self, automaton: TokenAutomaton, prompt_length: int):
        self.automaton, self.prompt_length = automaton, prompt_length
        self.states: list[int] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.states:
            self.states = [self.automaton.start] * input_ids.shape[0]
        elif input_ids.shape[1] > self.prompt_length:
            step = self.automaton.step
            self.states = [step(s, t) for s, t in zip(self.states, input_ids[:, -1].tolist(), strict=True)]
        allowed = torch.stack([self.automaton.masks[s] for s in self.states])
        return scores.masked_fill(~allowed[:, :scores.shape[1]], float("-inf"))
