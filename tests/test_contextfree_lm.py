"""Language-model primitives (context-free synthetic data card): KL, sampling, KV cache, pool limit, bpc, task."""
from __future__ import annotations

import math

import pytest
import torch

from bench.config import DataConfig, ModelConfig, SpecError, parse
from methods.contextfree.lm import (ByteTokenizer, PoolExhausted, ReplayPool, TinyLM, arithmetic_task, bits_per_char, build_lm,
                      encode_documents, generate, masked_nll, task_batch, task_metrics, token_kl)
from methods.contextfree.text_data import load_text_splits, split_documents

CPU = torch.device("cpu")


def test_token_kl_matches_hand_computed_two_token_toy():
    ref = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    cur = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    kl1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)   # 0.143841...
    kl2 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)     # 0.368064...
    assert token_kl(ref, cur, torch.tensor([[True, True]])).item() == pytest.approx((kl1 + kl2) / 2, abs=1e-6)
    assert token_kl(ref, cur, torch.tensor([[True, False]])).item() == pytest.approx(kl1, abs=1e-6)
    assert token_kl(ref, ref + 3.0, torch.tensor([[True, True]])).item() == pytest.approx(0.0, abs=1e-6)
    # direction: KL(ref || cur), not KL(cur || ref)
    rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert token_kl(ref, cur, torch.tensor([[True, False]])).item() != pytest.approx(rev, abs=1e-3)


def test_masked_nll_averages_only_masked_positions():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    y = torch.tensor([[0, 1]])
    assert masked_nll(logits, y, torch.tensor([[False, True]])).item() == pytest.approx(-math.log(0.1), abs=1e-6)
    assert masked_nll(logits, y, torch.tensor([[True, True]])).item() == pytest.approx(
        (math.log(2) - math.log(0.1)) / 2, abs=1e-6)


def _toy_model(vocab: int = 4, seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    m = TinyLM(vocab, n_layer=1, d_model=16, n_head=2, max_len=16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)  # clearly non-uniform next-token distributions, no empty cells
    return m.eval()


def _joint_counts_and_probs(model: TinyLM, bos: int, n: int, temperature: float):
    V = model.head.out_features
    g = torch.Generator().manual_seed(1234)
    out = generate(model, torch.full((n, 1), bos), 2, temperature=temperature, gen=g, batch_size=4096)
    counts = torch.bincount(out[:, 1] * V + out[:, 2], minlength=V * V).double()
    with torch.no_grad():
        p1 = model(input_ids=torch.tensor([[bos]])).logits[0, -1].double().softmax(-1)
        pairs = torch.stack([torch.full((V,), bos), torch.arange(V)], 1)
        p2 = model(input_ids=pairs).logits[:, -1].double().softmax(-1)  # no cache: full forward
    return counts.numpy(), (p1[:, None] * p2).flatten().numpy() * n


def test_context_free_sampling_at_temperature_one_matches_the_model_distribution():
    from scipy.stats import chisquare
    model = _toy_model()
    counts, expected = _joint_counts_and_probs(model, bos=3, n=40000, temperature=1.0)
    assert expected.min() > 5  # the chi-square approximation holds
    assert chisquare(counts, expected).pvalue > 1e-3
    # the test can fail: temperature 0.5 samples are a different distribution
    counts_cold, _ = _joint_counts_and_probs(model, bos=3, n=40000, temperature=0.5)
    assert chisquare(counts_cold, expected).pvalue < 1e-6


def test_kv_cache_generation_equals_full_forward():
    model = _toy_model(vocab=7, seed=1)
    prompt = torch.tensor([[6, 1, 2], [6, 3, 3]])
    out = generate(model, prompt, 6, greedy=True)
    ids = prompt
    for _ in range(6):
        nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], 1)
    assert torch.equal(out, ids)
    # several new tokens after a cache: same logits as one full pass
    full = model(input_ids=ids).logits
    res = model(input_ids=ids[:, :4], use_cache=True)
    rest = model(input_ids=ids[:, 4:], past_key_values=res.past_key_values).logits
    assert torch.allclose(torch.cat([res.logits, rest], 1), full, atol=1e-5)


def test_pool_is_never_reused_more_than_max_uses():
    toks, mask = torch.arange(10)[:, None].repeat(1, 3), torch.ones(10, 2, dtype=torch.bool)
    pool = ReplayPool(toks, mask, max_uses=2, gen=torch.Generator().manual_seed(0))
    seen = torch.zeros(10, dtype=torch.long)
    with pytest.raises(PoolExhausted, match="max_uses=2"):
        for _ in range(100):
            t, _ = pool.draw(3)
            assert t[:, 0].unique().numel() == 3  # distinct within a draw
            seen += torch.bincount(t[:, 0], minlength=10)
            assert int(seen.max()) <= 2
    assert int(seen.max()) == 2 and pool.handed_out <= 20
    with pytest.raises(PoolExhausted):
        pool.draw(11)


def test_pool_regenerates_instead_of_reusing():
    calls = []

    def regen(r):
        calls.append(r)
        return torch.full((4, 2), 100 * r), torch.ones(4, 1, dtype=torch.bool)
    pool = ReplayPool(torch.zeros(4, 2, dtype=torch.long), torch.ones(4, 1, dtype=torch.bool), max_uses=1,
                      gen=torch.Generator().manual_seed(0), regenerate=regen)
    values = [int(pool.draw(2)[0][0, 0]) for _ in range(8)]
    assert values == [0, 0, 100, 100, 200, 200, 300, 300] and calls == [1, 2, 3]
    assert int(pool.uses.max()) <= 1


def test_bits_per_char_of_a_uniform_model_is_log2_vocab_per_token():
    tok = ByteTokenizer()

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, **_):
            return type("O", (), {"logits": torch.zeros(*input_ids.shape, tok.vocab_size)})()
    docs = ["hello world", "abc", "a much longer document " * 5]
    n_chars = sum(map(len, docs))
    bpc = bits_per_char(Uniform(), tok, docs, seq_len=8, device=CPU)
    # every character and every EOS predicted once; BOS targets excluded
    assert bpc == pytest.approx(math.log2(tok.vocab_size) * (n_chars + len(docs)) / n_chars, rel=1e-6)


def test_documents_start_with_bos_and_end_with_eos():
    tok = ByteTokenizer()
    stream, starts, n = encode_documents(tok, ["ab", "c"])
    assert stream.tolist() == [256, 97, 98, 257, 256, 99, 257] and starts.tolist() == [0, 4] and n == 3


def test_task_loss_mask_covers_the_answer_only():
    tok = ByteTokenizer()
    task = arithmetic_task(0, max_operand=9, ops="+", n_train=50, n_val=10, n_test=10)
    assert not {e.prompt for e in task["test"]} & {e.prompt for e in task["train"]}
    e = task["train"][0]
    a, b = map(int, e.prompt[3:-5].split("+"))
    assert e.answer == f" {a + b}" and e.prompt.endswith("=? A:")
    x, y, m = task_batch(tok, [e], CPU)
    assert tok.decode(y[0][m[0]].tolist()) == e.answer and y[0][m[0]][-1].item() == tok.eos_id
    with pytest.raises(SpecError):
        arithmetic_task(0, max_operand=2, ops="+", n_train=9, n_val=1, n_test=1)


def test_exact_match_of_a_model_that_knows_the_answer():
    tok = ByteTokenizer()
    ex = arithmetic_task(0, max_operand=3, ops="+", n_train=4, n_val=4, n_test=4)["test"]
    table = {}
    for e in ex:
        ids = [tok.bos_id] + tok.encode(e.prompt) + tok.encode(e.answer) + [tok.eos_id]
        table[tuple(ids[:len(tok.encode(e.prompt)) + 1])] = ids

    class Oracle(torch.nn.Module):  # continues any known prefix with the right answer
        def forward(self, input_ids, past_key_values=None, use_cache=False, **_):
            hist = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], 1)
            logits = torch.zeros(*input_ids.shape, tok.vocab_size)
            for i, row in enumerate(hist.tolist()):
                full = next((v for k, v in table.items() if row[:len(k)] == list(k)), None)
                nxt = full[len(row)] if full and len(row) < len(full) else tok.eos_id
                logits[i, -1, nxt] = 50.0
            return type("O", (), {"logits": logits, "past_key_values": hist})()
    assert task_metrics(Oracle(), tok, ex, CPU)["em"] == 1.0


def test_tiny_lm_kwargs_are_checked():
    tok = ByteTokenizer()
    with pytest.raises(SpecError, match="model.kwargs.width"):
        build_lm(ModelConfig("tiny_lm", {"width": 3}), tok, seed=0)
    a = build_lm(ModelConfig("tiny_lm", {"n_layer": 1, "d_model": 16, "n_head": 2}), tok, seed=0)
    b = build_lm(ModelConfig("tiny_lm", {"n_layer": 1, "d_model": 16, "n_head": 2}), tok, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_method_params_errors_name_the_field(tmp_path):
    from bench.method import METHODS, load_methods
    from bench.spec import build_spec
    load_methods()
    with pytest.raises(SpecError) as e:
        parse(METHODS.get("cf_replay").Params, {"temperature": 0}, "method.params")
    assert e.value.path == "method.params.temperature"
    with pytest.raises(SpecError) as e:
        parse(METHODS.get("wise_ft").Params, {"alphas": [0.5, 1.5]}, "method.params")
    assert e.value.path == "method.params.alphas"
    with pytest.raises(SpecError) as e:
        parse(METHODS.get("cf_replay").Params, {"on_exhausted": "reuse"}, "method.params")
    assert e.value.path == "method.params.on_exhausted"
    with pytest.raises(SpecError) as e:
        build_spec({"name": "x", "datasets": ["pydoc"], "models": ["tiny_lm"],
                    "methods": [{"name": "kl_cf", "max_uses": 0}]})
    assert e.value.path.endswith("params.max_uses")
    spec = build_spec({"name": "x", "datasets": ["pydoc"], "models": ["tiny_lm", f"hf:{tmp_path}"],
                       "methods": ["plain_ft"]})
    assert len(spec.runs) == 2
    with pytest.raises(SpecError) as e:  # an hf: folder must exist when the spec is validated
        build_spec({"name": "x", "datasets": ["pydoc"], "models": ["hf:/some/dir"], "methods": ["plain_ft"]})
    assert e.value.path == "models[0].name"


def test_pydoc_splits_are_disjoint_and_seeded():
    a = load_text_splits(DataConfig(name="pydoc"))
    b = load_text_splits(DataConfig(name="pydoc"))
    assert a.test == b.test and a.val == b.val
    assert len(a.train) > 5 * len(a.test) > 0 and len(a.val) == len(a.test)
    assert not set(a.test) & set(a.train)
    assert load_text_splits(DataConfig(name="pydoc", seed=1)).test != a.test
    assert split_documents("a\n\n\nb\n \nc") == ["a", "b", "c"]
    with pytest.raises(SpecError):
        load_text_splits(DataConfig(name="pydoc", train_per_class=3))


def test_tinyshakespeare_splits(shared_data):
    s = load_text_splits(DataConfig(name="tinyshakespeare"))
    assert s.meta["documents"]["test"] > 500 and s.test[0][0].isupper()
    assert sum(s.meta["chars"].values()) > 1_000_000


def test_hf_causal_lm_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = ByteTokenizer()
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "m")
    model = build_lm(ModelConfig(f"hf:{tmp_path / 'm'}", {"tokenizer": "byte"}), tok, seed=0).eval()
    prompt = torch.tensor([[tok.bos_id, 97, 98]])
    out = generate(model, prompt, 5, greedy=True)
    ids = prompt
    for _ in range(5):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    assert math.isfinite(bits_per_char(model, tok, ["hello there", "abc"], seq_len=16, device=CPU))
    with pytest.raises(SpecError):
        build_lm(ModelConfig(f"hf:{tmp_path / 'missing'}", {"tokenizer": "byte"}), tok, seed=0)
