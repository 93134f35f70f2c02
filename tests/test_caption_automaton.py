"""The precomputed token automaton (models/token_automaton.py): on a sample of reachable states, the allowed
tokens are exactly those a per-token check of the walker accepts, transitions are the walker's, and the
logits processor masks what the per-row computation masked."""

from __future__ import annotations

import random

import torch

from models.caption_schema import StructuredCaption, caption_json_schema
from models.json_constrained import SchemaWalker, TokenConstraint
from models.token_automaton import ConstrainedLogits, TokenAutomaton, automaton_for

TEXTS = [chr(c) for c in range(32, 127)] + ['{"', '":"', '","', "true", "null", '"}', "close-up", "},{", ' "', '"]']


def _automaton(cap: int = 5) -> TokenAutomaton:
    walker = SchemaWalker(caption_json_schema(), string_cap=cap)
    return TokenAutomaton(TokenConstraint(walker, TEXTS + [None], eos_ids=[len(TEXTS)], vocab_size=len(TEXTS) + 1))


def test_every_sampled_state_allows_exactly_what_a_per_token_walk_accepts():
    automaton = _automaton()
    walker, constraint = automaton.constraint.walker, automaton.constraint
    states = automaton.compile()
    assert states > 500  # the whole reachable automaton: many string positions, array counts, enum prefixes
    rng = random.Random(0)
    for sid in rng.sample(range(1, len(automaton.states)), 150):
        state = automaton.states[sid]
        brute = {t for t, text in enumerate(TEXTS) if walker.feed(state, text) is not None}
        allowed = set(automaton.masks[sid].nonzero().flatten().tolist())
        assert allowed == brute, state
        for token in rng.sample(sorted(brute), min(5, len(brute))):  # transitions = the walker's own step
            assert automaton.states[automaton.step(sid, token)] == (constraint.step(state, token) or None)
    assert automaton.masks[automaton.DEAD].nonzero().flatten().tolist() == [len(TEXTS)]  # complete: EOS only


def test_processor_masks_as_the_per_row_computation_and_walks_to_valid_json():
    automaton = _automaton(cap=8)
    constraint, rng = automaton.constraint, torch.Generator().manual_seed(1)
    processor, prompt = ConstrainedLogits(automaton, 3), torch.zeros(4, 3, dtype=torch.long)
    states, ids, done = [constraint.walker.start()] * 4, prompt, [[] for _ in range(4)]
    for _ in range(constraint.walker.max_chars() + 1):
        scores = torch.randn(4, len(TEXTS) + 1, generator=rng)
        masked = processor(ids, scores)
        for row, state in enumerate(states):  # the former per-row computation
            allowed = constraint.allowed(state) if state else torch.tensor(constraint.eos_ids)
            expected = torch.full_like(scores[row], float("-inf"))
            expected[allowed] = scores[row, allowed]
            assert torch.equal(masked[row], expected)
        tokens = masked.argmax(dim=1)
        for row, token in enumerate(tokens.tolist()):
            if states[row]:
                done[row].append(token)
                states[row] = constraint.step(states[row], token)
        ids = torch.cat([ids, tokens[:, None]], dim=1)
        if not any(states):
            break
    assert not any(states)
    for out in done:
        assert StructuredCaption.model_validate_json(constraint.decode(out))


def test_one_automaton_per_schema_and_vocabulary():
    walker = SchemaWalker(caption_json_schema(), string_cap=5)
    first = automaton_for(walker, TEXTS + [None], [len(TEXTS)], len(TEXTS) + 1)
    again = automaton_for(SchemaWalker(caption_json_schema(), string_cap=5), TEXTS + [None], [len(TEXTS)], len(TEXTS) + 1)
    other = automaton_for(SchemaWalker(caption_json_schema(), string_cap=6), TEXTS + [None], [len(TEXTS)], len(TEXTS) + 1)
    assert first is again and other is not first
