"""The fused Llama decode path: the transformers forward's hidden states bit for bit, the model's
own forward untouched, and the engine's traces identical whichever path decodes."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from onegen.engine import Engine, RunSettings
from onegen.fused_llama import FusedLlamaDecoder, fusable

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=96, vocab_size=300,
             max_position_embeddings=2048)


def _llama(**over) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**SMALL, **over})).eval()


class Reference:
    """The transformers forward over a DynamicCache, cut back the way the engine cuts drafts."""

    def __init__(self, model):
        self.model, self.cache = model, DynamicCache(config=model.config)

    def forward(self, ids):
        with torch.inference_mode():
            x = torch.tensor([ids])
            return self.model.model(input_ids=x, past_key_values=self.cache, use_cache=True).last_hidden_state[0]

    def truncate(self, n):
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[..., :n, :], layer.values[..., :n, :]


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_hidden_states_equal_the_transformers_forward(kv_heads):
    model = _llama(num_key_value_heads=kv_heads, rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
    ref, fused = Reference(model), FusedLlamaDecoder(model, capacity=16)
    ids = torch.randint(0, 300, (700,), generator=torch.Generator().manual_seed(1)).tolist()
    # A prompt, single tokens, drafts of several, refused drafts cut back, and growth past the capacity.
    steps = [(ids[:40], None), (ids[40:41], None), (ids[41:44], 42), (ids[42:45], None), (ids[45:46], None),
             (ids[46:300], 200), (ids[200:700], None)]
    for chunk, cut in steps:
        a, b = ref.forward(chunk), fused.forward(chunk)
        assert torch.equal(a, b), (len(chunk), (a - b).abs().max())
        if cut is not None:
            ref.truncate(cut)
            fused.truncate(cut)
    assert len(fused) == 700 and fused.capacity >= 700


def test_fusing_shares_the_weights_and_leaves_the_model_forward_alone():
    model = _llama(num_key_value_heads=2)
    x = torch.randint(0, 300, (1, 20))
    with torch.inference_mode():
        before = model(input_ids=x).logits
    storage = sum(p.untyped_storage().nbytes() for p in model.parameters())
    FusedLlamaDecoder(model)
    FusedLlamaDecoder(model)  # a second decoder reuses the first one's fusion
    with torch.inference_mode():
        assert torch.equal(model(input_ids=x).logits, before)
    attn = model.model.layers[0].self_attn
    shared = {p.untyped_storage().data_ptr() for p in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)}
    assert len(shared) == 1
    # Each parameter now sees its whole fused storage; counting every storage once, nothing was added.
    unique = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    assert sum(unique.values()) == storage


def test_models_outside_the_pattern_are_refused_with_a_reason():
    assert fusable(_llama(), torch.device("cpu")) is None
    assert "bias" in fusable(_llama(attention_bias=True), torch.device("cpu"))
    assert "CPU" in fusable(_llama(), torch.device("meta"))
    assert "changes with the sequence length" in fusable(
        _llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), torch.device("cpu"))
    mistral = MistralForCausalLM(MistralConfig(sliding_window=8, **{**SMALL, "num_key_value_heads": 2}))
    assert "not a LlamaForCausalLM" in fusable(mistral, torch.device("cpu"))
    odd = _llama()

    class Quantized(torch.nn.Linear):
        pass

    old = odd.model.layers[1].mlp.up_proj
    odd.model.layers[1].mlp.up_proj = Quantized(old.in_features, old.out_features, bias=False)
    assert "plain float linear" in fusable(odd, torch.device("cpu"))
    with pytest.raises(ValueError, match="bias"):
        FusedLlamaDecoder(_llama(attention_bias=True))


def test_past_the_context_limit_is_an_error_not_a_wrap():
    dec = FusedLlamaDecoder(_llama(max_position_embeddings=64), capacity=16)
    dec.forward(list(range(60)))
    with pytest.raises(ValueError, match="exceed"):
        dec.forward(list(range(10)))
    assert len(dec) == 60


@pytest.mark.parametrize("task", ["multi-hop", "entity-linking", "single-hop"])
def test_engine_traces_are_the_same_on_either_path(models, task):
    from tiny import ENTITIES, PARAGRAPHS, PASSAGES

    lm = models[task]
    assert fusable(lm.model, lm.device) is None  # the tiny checkpoints are Llamas: the default path is fused
    docs = {"multi-hop": PARAGRAPHS, "entity-linking": ENTITIES, "single-hop": PASSAGES}[task]
    text = {"multi-hop": "Where was the director of Film A born?", "entity-linking": "Ivo Brandel lives in Paris.",
            "single-hop": "Where was Ivo Brandel born?"}[task]
    engine = Engine(lm)
    runs = {}
    for fused in (True, False):
        runs[fused] = engine.run_trace(task, text, candidates=docs,
                                       settings=RunSettings(fused_decoder=fused, max_new_tokens=40))
    a, b = runs[True], runs[False]
    assert a.settings["decoder"] == "fused-llama" and b.settings["decoder"] == "transformers"
    assert [(t.id, t.kind) for t in a.tokens] == [(t.id, t.kind) for t in b.tokens]
    assert [[(h.id, h.score) for h in r.hits] for r in a.retrievals] == [[(h.id, h.score) for h in r.hits] for r in b.retrievals]
    assert a.cost.forward_tokens == b.cost.forward_tokens


def test_packed_pass_in_bf16_equals_each_sequence_alone():
    # The packed pass follows the model's dtype and device (a bf16 GPU model in benchmarks/gpu.py);
    # here in bf16 on the CPU: sequences of different lengths, a prefill beside decode steps.
    from onegen.fused_llama import forward_packed

    model = _llama(num_key_value_heads=2).to(torch.bfloat16)
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 300, (n,), generator=gen).tolist() for n in (5, 17, 1)]
    alone = [FusedLlamaDecoder(model, capacity=16) for _ in prompts]
    packed = [FusedLlamaDecoder(model, capacity=16, any_device=True) for _ in prompts]
    steps = [prompts, [[7], [8], [9]], [[10], [11, 12, 13], [14]]]
    for ids in steps:
        together = forward_packed(packed, ids)
        for dec, new, h in zip(alone, ids, together):
            one = dec.forward(new)
            assert h.dtype == torch.bfloat16 and h.shape == one.shape
            torch.testing.assert_close(h, one, atol=2e-2, rtol=2e-2)
            with torch.inference_mode():
                same_choice = torch.equal(model.lm_head(h).argmax(-1), model.lm_head(one).argmax(-1))
            assert same_choice
    assert [len(d) for d in packed] == [len(d) for d in alone] == [7, 21, 3]


def test_the_engine_keeps_the_fused_path_to_the_cpu():
    model = _llama()
    assert "CPU only" in fusable(model, torch.device("cuda"))
    assert fusable(model, torch.device("cuda"), any_device=True) is None


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_a_shared_cache_attends_for_its_sequences_as_each_alone(kv_heads):
    """Short steps of sequences in one SharedKVCache attend in one masked call: ragged lengths,
    drafts of different widths, a prefill beside them, a slot freed and taken again, the cache
    growing mid-run, a sequence outside the cache in the same call."""
    from onegen.fused_llama import SharedKVCache, forward_packed

    model = _llama(num_key_value_heads=kv_heads)
    cache = SharedKVCache(model, slots=4, capacity=16)
    gen = torch.Generator().manual_seed(3)
    rand = lambda n: torch.randint(0, 300, (n,), generator=gen).tolist()  # noqa: E731
    shared = [FusedLlamaDecoder(model, shared=cache) for _ in range(3)]
    own = FusedLlamaDecoder(model, capacity=16)  # not in the cache: attends alone
    decs = [*shared, own]
    alone = [FusedLlamaDecoder(model, capacity=16) for _ in decs]
    assert [d.slot for d in shared] == [0, 1, 2] and own.shared is None

    def step(ids):
        together = forward_packed(decs, ids)
        for a, new, h in zip(alone, ids, together):
            one = a.forward(new)
            torch.testing.assert_close(h, one, atol=1e-5, rtol=1e-5)
            assert torch.equal(model.lm_head(h).argmax(-1), model.lm_head(one).argmax(-1))

    with torch.inference_mode():
        step([rand(5), rand(11), rand(2), rand(3)])
        step([[7], [8, 9, 10], [11], [12, 13]])          # short steps: one call for the cache's three
        step([rand(3), [14], rand(9), [15]])              # a prefill (alone) beside short steps
        for d, a in zip(decs, alone):                     # a refused draft
            d.truncate(len(d) - 1)
            a.truncate(len(a) - 1)
        step([[16, 17], [18], [19, 20, 21], [22]])
        # The middle run ends; a new one takes its slot (its stale keys are never read).
        cache.detach(shared[1])
        assert cache.free() == 2 and shared[1].shared is None
        new = FusedLlamaDecoder(model, shared=cache)
        assert new.slot == 1
        decs[1], alone[1] = new, FusedLlamaDecoder(model, capacity=16)
        step([[23], rand(4), [24], [25]])
        step([[26], [27], [28], [29]])
        step([rand(20), [30, 31], [32], [33]])            # past the capacity: the cache grows for all
        assert cache.capacity > 16 and all(d.capacity == cache.capacity for d in decs[:3])
        step([[34], [35], [36, 37], [38]])
    assert [len(d) for d in decs] == [len(a) for a in alone]


def test_a_full_shared_cache_refuses_another_sequence():
    from onegen.fused_llama import SharedKVCache

    model = _llama()
    cache = SharedKVCache(model, slots=2, capacity=16)
    a, b = FusedLlamaDecoder(model, shared=cache), FusedLlamaDecoder(model, shared=cache)
    assert cache.free() == 0
    with pytest.raises(ValueError, match="all 2 slots"):
        FusedLlamaDecoder(model, shared=cache)
    cache.detach(a)
    assert FusedLlamaDecoder(model, shared=cache).slot == 0 and b.slot == 1


def test_runs_in_a_shared_cache_take_a_common_prompt_prefix_instead_of_computing_it():
    """A run that starts with another's prefix (in the same call, or remembered from an earlier one)
    copies those positions' keys and values: its returned rows are only the ones it computed, and
    every later step equals the sequence computed alone."""
    from onegen.fused_llama import SHARE_MIN, SharedKVCache, forward_packed

    model = _llama(num_key_value_heads=2)
    cache = SharedKVCache(model, slots=4, capacity=16)
    gen = torch.Generator().manual_seed(4)
    rand = lambda n: torch.randint(0, 300, (n,), generator=gen).tolist()  # noqa: E731
    template = rand(SHARE_MIN + 6)
    prompts = [template + rand(5), template + rand(2), rand(12), template[:SHARE_MIN - 1] + rand(9)]
    decs = [FusedLlamaDecoder(model, shared=cache) for _ in prompts]
    alone = [FusedLlamaDecoder(model, capacity=16) for _ in prompts]

    def step(ids, computed):
        together = forward_packed(decs, ids)
        assert [len(h) for h in together] == computed
        for a, new, h in zip(alone, ids, together):
            one = a.forward(new)[-len(h):]
            torch.testing.assert_close(h, one, atol=1e-5, rtol=1e-5)

    with torch.inference_mode():
        # The second run copies the template from the first, layer by layer; the last shares too little.
        step(prompts, [len(prompts[0]), 2, 12, len(prompts[3])])
        step([[5], [6, 7], [8], [9]], [1, 2, 1, 1])
        # A new run in a freed slot takes the template from the remembered first prompt.
        cache.detach(decs[2])
        decs[2], alone[2] = FusedLlamaDecoder(model, shared=cache), FusedLlamaDecoder(model, capacity=16)
        step([[10], [11], template + [12, 13], [14]], [1, 1, 2, 1])
        step([[15, 16], [17], [18], [19, 20]], [2, 1, 1, 2])
        # The whole prompt seen before: the last id is still computed (its hidden state is read).
        cache.detach(decs[2])
        decs[2], alone[2] = FusedLlamaDecoder(model, shared=cache), FusedLlamaDecoder(model, capacity=16)
        step([[21], [22], template + [12, 13], [23]], [1, 1, 1, 1])
    assert [len(d) for d in decs] == [len(a) for a in alone]
