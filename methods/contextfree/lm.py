"""Language-model task family (context-free synthetic data card): tokenizers, a tiny decoder-only transformer
with a KV cache, Hugging Face causal LMs from a local directory, LM batches, bits per character, batched
sampling, the arithmetic fine-tuning task, a replay pool with a use limit, and a step-based training loop on
`bench.train.make_optimizer` / `lr_factor`.

Conventions: every document is encoded as [BOS] + tokens + [EOS] (BOS at every document start, so p(x | BOS)
is the document distribution). Token tensors are int64 on the run's device. Models are called as
`model(input_ids=..., past_key_values=..., use_cache=...)` and return an object with `.logits` and
`.past_key_values`: the tiny model mimics the Hugging Face interface, so both go through the same code.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import ModelConfig, SpecError, TrainConfig
from bench.models import MODEL_FAMILIES, ModelFamily
from bench.seeding import derive_seed, generator
from bench.security import TRUST_REMOTE_CODE_FLAG, remote_code_allowed
from bench.train import NonFiniteLoss, lr_factor, make_optimizer

LM_MODELS = ("tiny_lm",)      # plus "hf:<local directory>"
HF_PREFIX = "hf:"
MODEL_FAMILIES.register("language models")(ModelFamily(names=LM_MODELS, prefixes=(HF_PREFIX,)))
LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ tokenizers
class ByteTokenizer:
    """UTF-8 bytes 0..255, then BOS=256, EOS=257, PAD=258."""
    bos_id, eos_id, pad_id, vocab_size = 256, 257, 258, 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer behind the ByteTokenizer interface (BOS falls back to EOS when absent)."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.eos_id = tok.eos_token_id
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tok)
        if self.eos_id is None:
            raise ValueError("the Hugging Face tokenizer has no EOS token")

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------- models
@dataclass
class LMOutput:
    logits: torch.Tensor
    past_key_values: Optional[list] = None


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, past: Optional[tuple], use_cache: bool):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        S = k.shape[2]
        drop = self.dropout if self.training else 0.0
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # several new tokens after a cache: query i sees keys j <= (S - T) + i
            mask = torch.arange(S, device=x.device)[None, :] <= (S - T + torch.arange(T, device=x.device))[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + self.mlp(self.ln2(x))
        return x, ((k, v) if use_cache else None)


class TinyLM(nn.Module):
    """Pre-LN decoder-only transformer, learned positions, tied input/output embeddings."""

    def __init__(self, vocab_size: int, n_layer: int = 2, d_model: int = 64, n_head: int = 4, max_len: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_head:
            raise SpecError("model.kwargs.n_head", n_head, f"a divisor of d_model={d_model}")
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "mlp.2.weight"))
                                else 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, input_ids: torch.Tensor, past_key_values: Optional[list] = None, use_cache: bool = False,
                **_: Any) -> LMOutput:
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        T = input_ids.shape[1]
        if start + T > self.max_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_len={self.max_len}")
        x = self.tok(input_ids) + self.pos(torch.arange(start, start + T, device=input_ids.device))
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if past_key_values is None else past_key_values[i], use_cache)
            new.append(kv)
        return LMOutput(self.head(self.ln_f(x)), new if use_cache else None)


# kwargs of an `hf:<dir>` model: these and nothing else reach `from_pretrained` (no code from the spec)
HF_DTYPES = ("auto", "float32", "float16", "bfloat16")
HF_KWARGS: dict[str, str] = {
    "tokenizer": "'auto' (the directory's tokenizer) or 'byte'",
    "dtype": f"one of {', '.join(HF_DTYPES)}",
    "torch_dtype": f"one of {', '.join(HF_DTYPES)} (the older name of dtype)",
    "attn_implementation": "'eager' or 'sdpa'",
    "trust_remote_code": "false, or true together with `forgetbench run --trust-remote-code` (runs the Python "
                         "files of the model directory)",
}


def check_hf_kwargs(kwargs: dict[str, Any], path: str = "model.kwargs") -> None:
    """Validate an `hf:` model's kwargs (SpecError naming the field): only HF_KWARGS, with allowed values;
    `trust_remote_code: true` only when the user passed --trust-remote-code (bench.security)."""
    for k, v in kwargs.items():
        if k not in HF_KWARGS:
            raise SpecError(f"{path}.{k}", k, f"one of {', '.join(HF_KWARGS)} (unknown key for an {HF_PREFIX} model)")
        ok = {"tokenizer": v in ("auto", "byte"),
              "dtype": v in HF_DTYPES, "torch_dtype": v in HF_DTYPES,
              "attn_implementation": v in ("eager", "sdpa"),
              "trust_remote_code": isinstance(v, bool)}[k]
        if not ok:
            raise SpecError(f"{path}.{k}", v, HF_KWARGS[k])
        if k == "trust_remote_code" and v and not remote_code_allowed():
            raise SpecError(f"{path}.{k}", v, f"false: remote code runs only with `forgetbench run "
                                              f"{TRUST_REMOTE_CODE_FLAG}` (it executes the Python files of the "
                                              f"model directory)")
    if "dtype" in kwargs and "torch_dtype" in kwargs:
        raise SpecError(f"{path}.torch_dtype", kwargs["torch_dtype"], "absent when dtype is given")


def hf_load_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The validated `from_pretrained` keywords of an `hf:` model (tokenizer excluded), always with an explicit
    local_files_only=True and trust_remote_code (False unless allowed)."""
    check_hf_kwargs(kwargs)
    out: dict[str, Any] = {"local_files_only": True, "trust_remote_code": bool(kwargs.get("trust_remote_code"))}
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if dtype is not None:
        out["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    if "attn_implementation" in kwargs:
        out["attn_implementation"] = kwargs["attn_implementation"]
    return out


def make_tokenizer(cfg: ModelConfig):
    """ByteTokenizer for tiny_lm; for hf:<dir>, kwargs.tokenizer 'auto' (the directory's) or 'byte'."""
    if cfg.name.startswith(HF_PREFIX):
        check_hf_kwargs(cfg.kwargs)
    if cfg.name.startswith(HF_PREFIX) and cfg.kwargs.get("tokenizer", "auto") == "auto":
        from transformers import AutoTokenizer
        return HFTokenizer(AutoTokenizer.from_pretrained(
            cfg.name[len(HF_PREFIX):], local_files_only=True,
            trust_remote_code=bool(cfg.kwargs.get("trust_remote_code"))))
    return ByteTokenizer()


def build_lm(cfg: ModelConfig, tokenizer, *, seed: int) -> nn.Module:
    """tiny_lm (initialised from stream `init` of `seed`) or a Hugging Face causal LM from a LOCAL directory
    (`hf:<dir>`, weights as saved there; nothing is fetched from a hub)."""
    if cfg.name.startswith(HF_PREFIX):
        from transformers import AutoModelForCausalLM
        path = Path(cfg.name[len(HF_PREFIX):])
        if not path.is_dir():
            raise SpecError("model.name", cfg.name, "hf:<an existing local directory>")
        return AutoModelForCausalLM.from_pretrained(str(path), **hf_load_kwargs(cfg.kwargs))
    if cfg.name != "tiny_lm":
        raise SpecError("model.name", cfg.name, f"one of {', '.join(LM_MODELS)} or {HF_PREFIX}<local directory>")
    allowed = ("n_layer", "d_model", "n_head", "max_len", "dropout", "vocab_size")
    for k in cfg.kwargs:
        if k not in allowed:
            raise SpecError(f"model.kwargs.{k}", k, f"one of {', '.join(allowed)}")
    kwargs = {"vocab_size": tokenizer.vocab_size, **cfg.kwargs}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return TinyLM(**kwargs)


def max_positions(model: nn.Module) -> int:
    if isinstance(model, TinyLM):
        return model.max_len
    c = getattr(model, "config", None)
    return int(getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None) or 1 << 30)


# ---------------------------------------------------------------------------------------------- data
def encode_documents(tok, docs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(stream int64 [N] of [BOS] doc [EOS] ..., document start offsets int64 [D], number of characters)."""
    ids: list[int] = []
    starts: list[int] = []
    for d in docs:
        starts.append(len(ids))
        ids.append(tok.bos_id)
        ids.extend(tok.encode(d))
        ids.append(tok.eos_id)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long), sum(map(len, docs))


def random_windows(stream: torch.Tensor, n: int, length: int, gen: torch.Generator,
                   starts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n windows of `length` tokens: at random offsets, or (given `starts`) at random document starts."""
    limit = stream.numel() - length
    if limit < 1:
        raise ValueError(f"a stream of {stream.numel()} tokens is too short for windows of {length}")
    if starts is None:
        off = torch.randint(0, limit, (n,), generator=gen)
    else:
        ok = starts[starts < limit]
        off = ok[torch.randint(0, ok.numel(), (n,), generator=gen)]
    return stream[off[:, None] + torch.arange(length)]


def masked_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL (nats) over positions where mask is true. logits [B,T,V], targets/mask [B,T]."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    m = mask.flatten().float()
    return (nll * m).sum() / m.sum().clamp_min(1)


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of KL(p_ref || p) = sum_v p_ref(v) (log p_ref(v) - log p(v)) (nats)."""
    ref = F.log_softmax(ref_logits.float(), -1)
    cur = F.log_softmax(logits.float(), -1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp_min(1)


@torch.no_grad()
def bits_per_char(model: nn.Module, tok, docs: Sequence[str], *, seq_len: int, device: torch.device,
                  max_chars: Optional[int] = None, batch_size: int = 64) -> float:
    """Held-out NLL in bits per character: the stream of `docs` (first `max_chars` characters' documents) cut
    into chunks of seq_len+1 tokens overlapping by one; every token after the first is predicted once (BOS
    targets excluded, EOS included); total bits / characters of those documents."""
    if max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        docs = kept
    stream, _, n_chars = encode_documents(tok, docs)
    n_chunks = math.ceil((stream.numel() - 1) / seq_len)
    pad = n_chunks * seq_len + 1 - stream.numel()
    padded = torch.cat([stream, torch.full((pad,), tok.pad_id, dtype=torch.long)])
    chunks = padded[torch.arange(n_chunks)[:, None] * seq_len + torch.arange(seq_len + 1)]
    was = model.training
    model.eval()
    total_nats = 0.0
    for i in range(0, n_chunks, batch_size):
        c = chunks[i:i + batch_size].to(device)
        x, y = c[:, :-1], c[:, 1:]
        valid = (torch.arange(i, i + c.shape[0], device=device)[:, None] * seq_len
                 + torch.arange(1, seq_len + 1, device=device)) < stream.numel()
        valid &= y != tok.bos_id
        nll = F.cross_entropy(model(input_ids=x).logits.float().flatten(0, 1), y.flatten(), reduction="none")
        total_nats += float((nll * valid.flatten()).sum())
    model.train(was)
    return total_nats / LN2 / max(n_chars, 1)


# ---------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int, *, temperature: float = 1.0,
             greedy: bool = False, gen: Optional[torch.Generator] = None, batch_size: int = 512,
             eos_id: Optional[int] = None, pad_id: Optional[int] = None) -> torch.Tensor:
    """Continue every row of `prompt` [B, P] (same length, on the model's device) by `new_tokens` tokens,
    batched with a KV cache. Sampling is plain ancestral sampling from softmax(logits / temperature) (no
    top-k / top-p); greedy takes the argmax. With eos_id and pad_id, tokens after a row's EOS become pad_id."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, prompt.shape[0], batch_size):
        ids = prompt[i:i + batch_size]
        res = model(input_ids=ids, use_cache=True)
        past, logits = res.past_key_values, res.logits[:, -1]
        toks = []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for t in range(new_tokens):
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = F.softmax(logits.float() / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            if eos_id is not None and pad_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
                done |= nxt == eos_id
            toks.append(nxt)
            if t + 1 < new_tokens:
                res = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
                past, logits = res.past_key_values, res.logits[:, -1]
        out.append(torch.cat([ids, torch.stack(toks, 1)], 1) if toks else ids)
    model.train(was)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ replay pool
class PoolExhausted(RuntimeError):
    """A replay pool would hand out a sequence more often than its configured limit."""


class ReplayPool:
    """Sequences [N, L] with a loss mask [N, L-1] (over targets), handed out in shuffled passes.

    No sequence is ever handed out more than `max_uses` times: when the next one would exceed it, the pool
    calls `regenerate(round)` for a fresh (tokens, mask) pool (round = 1, 2, ...) or, without it, raises
    PoolExhausted. `uses` counts hand-outs per sequence of the current pool.
    """

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor, *, max_uses: int, gen: torch.Generator,
                 regenerate: Optional[Callable[[int], tuple[torch.Tensor, torch.Tensor]]] = None,
                 name: str = "pool") -> None:
        if max_uses < 1:
            raise ValueError("max_uses must be >= 1")
        self.max_uses, self.gen, self.regenerate, self.name = max_uses, gen, regenerate, name
        self.rounds = 0
        self.handed_out = 0
        self._load(tokens, mask)

    def _load(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        self.tokens, self.mask = tokens, mask
        self.uses = torch.zeros(tokens.shape[0], dtype=torch.long)
        self._order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def draw(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k sequences (distinct within the draw) and their masks."""
        if k > len(self):
            raise PoolExhausted(f"{self.name}: a draw of {k} exceeds the pool size {len(self)}")
        if self._order.numel() < k:  # next shuffled pass (a leftover shorter than k is skipped this pass)
            self._order = torch.randperm(len(self), generator=self.gen)
        idx, self._order = self._order[:k], self._order[k:]
        if bool((self.uses[idx] >= self.max_uses).any()):
            if self.regenerate is None:
                raise PoolExhausted(
                    f"{self.name}: {len(self)} sequences would be used more than max_uses={self.max_uses} "
                    f"times after {self.handed_out} hand-outs; generate a larger pool or set on_exhausted: "
                    f"regenerate")
            self.rounds += 1
            self._load(*self.regenerate(self.rounds))
            return self.draw(k)
        self.uses[idx] += 1
        self.handed_out += k
        return self.tokens[idx], self.mask[idx]


# -------------------------------------------------------------------------------------- arithmetic task
@dataclass
class TaskExample:
    prompt: str    # "Q: 12+7=? A:"
    answer: str    # " 19"


def arithmetic_task(seed: int, *, max_operand: int, ops: str, n_train: int, n_val: int, n_test: int
                    ) -> dict[str, list[TaskExample]]:
    """Disjoint train/val/test questions 'Q: a<op>b=? A:' -> ' <result>' over all (a, op, b) with
    0 <= a, b <= max_operand (subtraction only with a >= b), shuffled with stream `task` of `seed`."""
    items = [(a, op, b) for op in ops for a in range(max_operand + 1) for b in range(max_operand + 1)
             if op != "-" or a >= b]
    need = n_train + n_val + n_test
    if need > len(items):
        raise SpecError("method.params.task_train", n_train,
                        f"task_train + task_val + task_test <= {len(items)} distinct questions")
    perm = torch.randperm(len(items), generator=generator(seed, "task")).tolist()

    def ex(i: int) -> TaskExample:
        a, op, b = items[i]
        return TaskExample(f"Q: {a}{op}{b}=? A:", f" {a + b if op == '+' else a - b if op == '-' else a * b}")
    sel = [ex(i) for i in perm[:need]]
    return {"test": sel[:n_test], "val": sel[n_test:n_test + n_val], "train": sel[n_test + n_val:]}


def task_batch(tok, examples: Sequence[TaskExample], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs [B,T], targets [B,T], mask [B,T]) for [BOS] prompt answer [EOS], right-padded; the mask covers
    the answer tokens and EOS only (loss on the answer part)."""
    rows, masks = [], []
    for e in examples:
        p, a = [tok.bos_id] + tok.encode(e.prompt), tok.encode(e.answer) + [tok.eos_id]
        rows.append(p + a)
        masks.append([False] * (len(p) - 1) + [True] * len(a))
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), tok.pad_id, dtype=torch.long)
    m = torch.zeros((len(rows), T - 1), dtype=torch.bool)
    for i, (r, mk) in enumerate(zip(rows, masks)):
        ids[i, :len(r)] = torch.tensor(r)
        m[i, :len(mk)] = torch.tensor(mk)
    ids = ids.to(device)
    return ids[:, :-1], ids[:, 1:], m.to(device)


@torch.no_grad()
def task_metrics(model: nn.Module, tok, examples: Sequence[TaskExample], device: torch.device, *,
                 max_answer_tokens: int = 8, batch_size: int = 256) -> dict[str, float]:
    """{"em": greedy exact match (answer stripped), "nll": mean NLL (nats) per answer token incl. EOS}."""
    if not examples:
        return {"em": float("nan"), "nll": float("nan")}
    was = model.training
    model.eval()
    nats, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y, m = task_batch(tok, examples[i:i + batch_size], device)
        nll = F.cross_entropy(model(input_ids=x).logits.float().flatten(0, 1), y.flatten(), reduction="none")
        nats += float((nll * m.flatten()).sum())
        count += int(m.sum())
    by_len: dict[int, list[int]] = {}
    prompts = [[tok.bos_id] + tok.encode(e.prompt) for e in examples]
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    correct = 0
    for L, idx in by_len.items():
        new = min(max_answer_tokens, max_positions(model) - L)
        for j in range(0, len(idx), batch_size):
            part = idx[j:j + batch_size]
            out = generate(model, torch.tensor([prompts[i] for i in part], device=device), new, greedy=True,
                           eos_id=tok.eos_id, pad_id=tok.pad_id)[:, L:].tolist()
            for i, ids in zip(part, out):
                ids = ids[:ids.index(tok.eos_id)] if tok.eos_id in ids else ids
                correct += tok.decode(ids).strip() == examples[i].answer.strip()
    model.train(was)
    return {"em": correct / len(examples), "nll": nats / max(count, 1)}


# -------------------------------------------------------------------------------------------- training
def train_lm(model: nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]], steps: int,
             recipe: TrainConfig, *, warmup_steps: int = 0, log: Optional[Callable[[dict], None]] = None,
             log_every: int = 50) -> dict[str, float]:
    """`steps` AdamW/Adam/SGD steps (bench.train.make_optimizer, no decay on 1-d params) with the per-step lr
    multiplier bench.train.lr_factor(recipe.schedule, step, steps, warmup_steps); `loss_fn(step)` returns the
    loss and floats to log. Gradient clipping from recipe.grad_clip. Returns the last logged row."""
    opt = make_optimizer(model, recipe.optimizer, decay_norm_and_bias=False)
    base = [g["lr"] for g in opt.param_groups]
    model.train()
    row: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(steps):
        f = lr_factor(recipe.schedule, step, steps, warmup_steps)
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * f
        loss, parts = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss {value} at step {step + 1}")
            row = {"step": step + 1, "loss": value, "lr": base[0] * f, "time_s": time.perf_counter() - t0,
                   **{k: float(v) for k, v in parts.items()}}
            if log is not None:
                log(row)
    return row
