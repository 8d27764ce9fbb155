"""Context-free synthetic data (card: ../shared/papers/contextfree.md): language-model arms on one shared
original model.

Setting (card, "A faithful small-scale setting"): the original model θ* is a small LM pretrained in the harness
on corpus A (`dataset`: pydoc | tinyshakespeare; BOS at every document start), shared by every arm through the
`lm_original` stage (computed once per dataset/model/pretraining recipe/pretrain seed). The task F is synthetic
arithmetic ("Q: 12+7=? A:" -> " 19", loss on the answer and EOS only), a stand-in for MetaMathQA/GSM8K. The
run's `train` recipe is the fine-tuning recipe: train.epochs passes over the task's training questions in
batches of train.batch_size, optimizer/schedule/grad_clip from `train`.

Metrics: task_em (greedy exact match, task test split), task_nll, task_val_em, bpc (corpus A held-out test
documents), orig_bpc, forgetting_bpc = bpc - orig_bpc, orig_task_em.

Replay arms add, at every step, k = max(1, round(mix_ratio * batch_size)) sequences of `gen_length` loss tokens
with weight `lam`: loss = task NLL (mean per answer token) + lam * replay NLL (mean per replay token), i.e. the
card's L = E_F[-log p(y|x)] + λ·KL(p_θ* ‖ p_θ) with the KL's θ-dependent part estimated on samples. Adding the
weighted term (instead of mixing examples into one token-averaged batch) is this harness's choice, so that the
long replay strings do not swamp the few answer tokens. Generated pools are stages (per run seed) and no
sequence is handed out more than `max_uses` times (card pitfall: memorised small pools): the pool is sized to
ceil(steps * k / max_uses) unless gen_count is given, and an exhausted pool raises or regenerates
(`on_exhausted`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch

from bench.config import OptimizerConfig, ScheduleConfig, SpecError, TrainConfig, each, in_range, satisfies, to_dict
from methods.contextfree.lm import (ReplayPool, arithmetic_task, bits_per_char, build_lm, encode_documents, generate,
                      make_tokenizer, masked_nll, max_positions, random_windows, task_batch, task_metrics, token_kl,
                      train_lm)
from bench.config import RunConfig
from bench.ids import canonical_json
from bench.method import Method, MethodResult, RunContext, Training, register_method
from bench.seeding import generator
from bench.store import atomic_torch_save, atomic_write_json

ORIGINAL_STAGE_VERSION = 1
POOL_STAGE_VERSION = 1


# ---------------------------------------------------------------------------------------------- params
@dataclass
class LMParams:
    """Shared by every arm: original model (pretraining), task, evaluation."""
    seq_len: int = field(default=128, metadata=in_range(8))                # pretraining / evaluation window
    pretrain_steps: int = field(default=2000, metadata=in_range(0))
    pretrain_batch_size: int = field(default=32, metadata=in_range(1))
    pretrain_lr: float = field(default=3e-3, metadata=in_range(0.0, lo_open=True))
    pretrain_weight_decay: float = field(default=0.1, metadata=in_range(0.0))
    pretrain_warmup_steps: int = field(default=100, metadata=in_range(0))
    pretrain_seed: Optional[int] = field(default=None, metadata=in_range(0))  # None: the run seed
    task_max_operand: int = field(default=49, metadata=in_range(1))
    task_ops: str = field(default="+", metadata=satisfies(                 # characters among + - *
        lambda ops: bool(ops) and set(ops) <= set("+-*") and len(set(ops)) == len(ops),
        "distinct characters among '+', '-', '*'"))
    task_train: int = field(default=1500, metadata=in_range(1))
    task_val: int = field(default=200, metadata=in_range(1))
    task_test: int = field(default=300, metadata=in_range(1))
    eval_chars: Optional[int] = field(default=50000, metadata=in_range(1))  # corpus A test characters for bpc
    log_every: int = field(default=50, metadata=in_range(1))


@dataclass
class PoolParams(LMParams):
    lam: float = field(default=1.0, metadata=in_range(0.0))                # weight of the replay / KL term
    mix_ratio: float = field(default=0.25, metadata=in_range(0.0, lo_open=True))  # replay sequences per task example
    gen_length: int = field(default=64, metadata=in_range(1))              # loss tokens per replay sequence
    gen_count: Optional[int] = field(default=None, metadata=in_range(1))   # None: steps * k / max_uses
    max_uses: int = field(default=2, metadata=in_range(1))                 # hand-outs per sequence, at most
    on_exhausted: Literal["raise", "regenerate"] = "raise"


@dataclass
class GenParams(PoolParams):
    temperature: float = field(default=1.0, metadata=in_range(0.0, lo_open=True))  # 1 = unbiased (card)


@dataclass
class ContextualParams(GenParams):
    prompt_tokens: int = field(default=16, metadata=in_range(2))           # BOS + the first tokens of a held-out doc


@dataclass
class RealParams(PoolParams):
    source: Literal["val", "train"] = "val"   # held-out corpus A documents (default) or the pretraining split


@dataclass
class L2Params(LMParams):
    l2: float = field(default=1.0, metadata=in_range(0.0))                 # loss += l2/2 * ||θ - θ*||²


@dataclass
class WiseParams(LMParams):
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata=each(in_range(0.0, 1.0)))
    tolerance: float = field(default=0.02, metadata=in_range(0.0, 1.0))    # val EM below the best allowed


# ------------------------------------------------------------------------------------- original model
def original_key(ctx: RunContext, p: LMParams) -> dict[str, Any]:
    c = ctx.config
    return {"version": ORIGINAL_STAGE_VERSION, "dataset": to_dict(c.dataset), "model": to_dict(c.model),
            "seq_len": p.seq_len, "steps": p.pretrain_steps, "batch_size": p.pretrain_batch_size,
            "lr": p.pretrain_lr, "weight_decay": p.pretrain_weight_decay, "warmup_steps": p.pretrain_warmup_steps,
            "seed": c.seed if p.pretrain_seed is None else p.pretrain_seed, "eval_chars": p.eval_chars,
            "device": str(ctx.device)}


def pretrain_recipe(p: LMParams) -> TrainConfig:
    return TrainConfig(optimizer=OptimizerConfig(name="adamw", lr=p.pretrain_lr, weight_decay=p.pretrain_weight_decay,
                                                 betas=[0.9, 0.95]),
                       schedule=ScheduleConfig(name="cosine", min_lr_ratio=0.1), grad_clip=1.0)


def original_model(ctx: RunContext, p: LMParams, tok, splits) -> tuple[dict[str, torch.Tensor], dict]:
    """θ*: tiny_lm pretrained on corpus A's train documents (or an hf:<dir> model, further pretrained when
    pretrain_steps > 0); weights and its held-out bpc are a shared stage."""
    key = original_key(ctx, p)

    def compute(sdir) -> None:
        t0 = time.perf_counter()
        model = build_lm(ctx.config.model, tok, seed=key["seed"]).to(ctx.device)
        stream, _, _ = encode_documents(tok, splits.train)
        gen = generator(key["seed"], "pretrain/windows")
        L = min(p.seq_len, max_positions(model) - 1)

        def loss_fn(step: int):
            w = random_windows(stream, p.pretrain_batch_size, L + 1, gen).to(ctx.device)
            logits = model(input_ids=w[:, :-1]).logits
            return masked_nll(logits, w[:, 1:], torch.ones_like(w[:, 1:], dtype=torch.bool)), {}
        history: list[dict] = []
        train_lm(model, loss_fn, p.pretrain_steps, pretrain_recipe(p), warmup_steps=p.pretrain_warmup_steps,
                 log=history.append, log_every=max(1, p.pretrain_steps // 20))
        bpc = bits_per_char(model, tok, splits.test, seq_len=L, device=ctx.device, max_chars=p.eval_chars)
        atomic_torch_save(sdir / "final.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
        atomic_write_json(sdir / "info.json", {"orig_bpc": bpc, "history": history,
                                               "wall_time_s": time.perf_counter() - t0})
    sdir = ctx.stage("lm_original", key, compute)
    state = torch.load(sdir / "final.pt", map_location="cpu", weights_only=True)
    return state, json.loads((sdir / "info.json").read_text())


# ---------------------------------------------------------------------------------------- the arms
class LMArm(Method):
    """Shared fine-tuning loop; subclasses add a term to the loss (`extra`) or post-process (`finish`)."""
    Params = LMParams

    def trainings(self, run: RunConfig) -> list[Training]:
        """The shared original model (pretraining on corpus A) and this arm's fine-tuning: step-based, so their
        cost is not given in epochs (flops unknown here)."""
        p = self.params
        return [Training("original model", to_dict(run.dataset), to_dict(run.model), 0.0,
                         run.seed if p.pretrain_seed is None else p.pretrain_seed, recipe=canonical_json(to_dict(p))),
                Training("fine-tuning", to_dict(run.dataset), to_dict(run.model), 0.0, run.seed,
                         recipe=canonical_json([type(self).__name__, to_dict(p)]))]

    def run(self, ctx: RunContext) -> MethodResult:
        p, cfg = self.params, ctx.config
        t0 = time.perf_counter()
        splits = ctx.data  # text splits (RunContext.data dispatches on the dataset's kind)
        tok = make_tokenizer(cfg.model)
        state, info = original_model(ctx, p, tok, splits)
        self.orig = build_lm(cfg.model, tok, seed=cfg.seed).to(ctx.device)
        self.orig.load_state_dict(state)
        self.orig.eval().requires_grad_(False)
        model = build_lm(cfg.model, tok, seed=cfg.seed).to(ctx.device)
        model.load_state_dict(state)
        self.ctx, self.tok, self.splits = ctx, tok, splits
        task = arithmetic_task(cfg.dataset.seed, max_operand=p.task_max_operand, ops=p.task_ops,
                               n_train=p.task_train, n_val=p.task_val, n_test=p.task_test)
        bs = min(cfg.train.batch_size, len(task["train"]))
        per_epoch = len(task["train"]) // bs
        steps = cfg.train.epochs * per_epoch
        self.steps, self.batch_size = steps, bs
        t_setup = time.perf_counter()
        extra = self.setup(model)
        t_train = time.perf_counter()

        order: list[int] = []

        def loss_fn(step: int):
            if step % per_epoch == 0:
                order[:] = torch.randperm(len(task["train"]),
                                          generator=generator(cfg.seed, f"order/{step // per_epoch + 1}")).tolist()
            i = (step % per_epoch) * bs
            x, y, m = task_batch(tok, [task["train"][j] for j in order[i:i + bs]], ctx.device)
            task_loss = masked_nll(model(input_ids=x).logits, y, m)
            parts = {"task_loss": task_loss.detach()}
            loss = task_loss
            if extra is not None:
                term, name = extra(model, step)
                parts[name] = term.detach()
                loss = loss + term
            return loss, parts
        train_lm(model, loss_fn, steps, cfg.train, warmup_steps=round(cfg.train.schedule.warmup_epochs * per_epoch),
                 log=ctx.log, log_every=p.log_every)
        t_done = time.perf_counter()
        metrics: dict[str, Any] = {}
        model = self.finish(model, task, metrics)
        L = min(p.seq_len, max_positions(model) - 1)
        bpc = bits_per_char(model, tok, splits.test, seq_len=L, device=ctx.device, max_chars=p.eval_chars)
        test = task_metrics(model, tok, task["test"], ctx.device)
        val = task_metrics(model, tok, task["val"], ctx.device)
        orig_task = task_metrics(self.orig, tok, task["test"], ctx.device)
        metrics.update(task_em=test["em"], task_nll=test["nll"], task_val_em=val["em"], task_val_nll=val["nll"],
                       bpc=bpc, orig_bpc=info["orig_bpc"], forgetting_bpc=bpc - info["orig_bpc"],
                       orig_task_em=orig_task["em"], orig_task_nll=orig_task["nll"], steps=steps)
        metrics.update(self.stats())
        return MethodResult(metrics=metrics, timings={
            "original_pretrain_s": info["wall_time_s"], "setup_s": t_train - t_setup, "finetune_s": t_done - t_train,
            "eval_s": time.perf_counter() - t_done, "total_s": time.perf_counter() - t0})

    def setup(self, model):  # -> Optional[callable(model, step) -> (loss term, name)]
        return None

    def finish(self, model, task, metrics: dict) -> torch.nn.Module:
        return model

    def stats(self) -> dict[str, Any]:
        return {}


@register_method("plain_ft")
class PlainFT(LMArm):
    """Plain fine-tuning on F (card, "Arms compared": plain fine-tuning)."""


class PoolArm(LMArm):
    """Adds lam * (loss on k pool sequences) per step (a weighted loss term, not the paper's mixing of examples
    into the fine-tuning set: harness choice, see the module docstring); the pool comes from `make_pool`."""
    Params = PoolParams
    kind = "pool"

    def setup(self, model):
        p = self.params
        k = max(1, round(p.mix_ratio * self.batch_size))
        count = p.gen_count or max(k, math.ceil(self.steps * k / p.max_uses))
        regen = (lambda r: self.make_pool(count, r)) if p.on_exhausted == "regenerate" else None
        self.pool = ReplayPool(*self.make_pool(count, 0), max_uses=p.max_uses, regenerate=regen, name=self.kind,
                               gen=generator(self.ctx.config.seed, f"{self.kind}/draws"))
        self.k = k

        def extra(model, step: int):
            toks, mask = self.pool.draw(self.k)
            toks, mask = toks.to(self.ctx.device), mask.to(self.ctx.device)
            return p.lam * self.term(model, toks, mask), f"{self.kind}_loss"
        return extra

    def term(self, model, toks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_nll(model(input_ids=toks[:, :-1]).logits, toks[:, 1:], mask)

    def make_pool(self, count: int, round_: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"pool_size": len(self.pool), "pool_rounds": self.pool.rounds, "pool_handed_out": self.pool.handed_out,
                "pool_max_uses": int(self.pool.uses.max()), "replay_per_step": self.k}

    def generated_pool(self, count: int, round_: int, prompt_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of θ* (temperature p.temperature, no truncation), cached as an `lm_pool` stage: given only BOS
        (prompt_tokens = 0), or given BOS + the first prompt_tokens-1 tokens of random held-out documents."""
        p, ctx, tok = self.params, self.ctx, self.tok
        key = {"version": POOL_STAGE_VERSION, "original": original_key(ctx, p), "kind": self.kind,
               "temperature": p.temperature, "gen_length": p.gen_length, "count": count,
               "prompt_tokens": prompt_tokens, "seed": ctx.config.seed, "round": round_}

        def compute(sdir) -> None:
            g = generator(ctx.config.seed, f"{self.kind}/generate/{round_}", ctx.device)
            if prompt_tokens == 0:
                prompt = torch.full((count, 1), tok.bos_id, dtype=torch.long, device=ctx.device)
            else:
                stream, starts, _ = encode_documents(tok, self.splits.val)
                ok = torch.tensor([s for s, e in zip(starts.tolist(), starts[1:].tolist() + [stream.numel()])
                                   if e - s >= prompt_tokens], dtype=torch.long)
                if ok.numel() == 0:
                    raise SpecError("method.params.prompt_tokens", prompt_tokens,
                                    "shorter than some held-out documents")
                pick = ok[torch.randint(0, ok.numel(), (count,), generator=generator(ctx.config.seed,
                                                                                      f"{self.kind}/prompts/{round_}"))]
                prompt = stream[pick[:, None] + torch.arange(prompt_tokens)].to(ctx.device)
            t0 = time.perf_counter()
            out = generate(self.orig, prompt, p.gen_length, temperature=p.temperature, gen=g).cpu()
            atomic_torch_save(sdir / "tokens.pt", out.to(torch.int32))
            atomic_write_json(sdir / "info.json", {"wall_time_s": time.perf_counter() - t0, "shape": list(out.shape)})
        sdir = ctx.stage("lm_pool", key, compute)
        toks = torch.load(sdir / "tokens.pt", weights_only=True).long()
        mask = torch.zeros(toks.shape[0], toks.shape[1] - 1, dtype=torch.bool)
        mask[:, max(prompt_tokens, 1) - 1:] = True  # loss on the generated tokens only
        return toks, mask


@register_method("cf_replay")
class CFReplay(PoolArm):
    """+ context-free generations (card, "Method": samples of θ* given only BOS, temperature 1, no top-k/p)."""
    Params = GenParams
    kind = "cf"

    def make_pool(self, count, round_):
        return self.generated_pool(count, round_)


@register_method("contextual_replay")
class ContextualReplay(PoolArm):
    """+ contextual generations (card, "Arms compared"); prompts = held-out corpus A prefixes (harness choice),
    loss on the generated continuation only."""
    Params = ContextualParams
    kind = "contextual"

    def make_pool(self, count, round_):
        if self.params.prompt_tokens + self.params.gen_length > max_positions(self.orig):
            raise SpecError("method.params.gen_length", self.params.gen_length,
                            f"prompt_tokens + gen_length <= {max_positions(self.orig)} (the model's max length)")
        return self.generated_pool(count, round_, prompt_tokens=self.params.prompt_tokens)


@register_method("real_replay")
class RealReplay(PoolArm):
    """+ real corpus A text (card, "Arms compared": replay); windows of BOS + gen_length tokens at random document
    starts of the held-out `val` documents (not the paper's pretraining data unless source: train)."""
    Params = RealParams
    kind = "real"

    def make_pool(self, count, round_):
        docs = self.splits.val if self.params.source == "val" else self.splits.train
        stream, starts, _ = encode_documents(self.tok, docs)
        toks = random_windows(stream, count, self.params.gen_length + 1,
                              generator(self.ctx.config.seed, f"real/windows/{round_}"), starts=starts)
        return toks, torch.ones(count, self.params.gen_length, dtype=torch.bool)


@register_method("kl_cf")
class KLCF(CFReplay):
    """Token-level forward KL(p_θ* ‖ p_θ) on context-free strings (card, "A faithful small-scale setting": extra
    arm, the LM analogue of LwF); same pool as cf_replay."""
    kind = "cf"

    def term(self, model, toks, mask):
        x = toks[:, :-1]
        with torch.no_grad():
            ref = self.orig(input_ids=x).logits
        return token_kl(ref, model(input_ids=x).logits, mask)

    def setup(self, model):
        extra = super().setup(model)
        return lambda m, step: (extra(m, step)[0], "kl")


@register_method("l2")
class L2(LMArm):
    """L2 to the original weights (card, "Arms compared": weight-space baselines): loss += l2/2 ||θ - θ*||²."""
    Params = L2Params

    def setup(self, model):
        ref = [q.detach() for q in self.orig.parameters()]

        def extra(model, step):
            return 0.5 * self.params.l2 * sum(((q - r) ** 2).sum() for q, r in zip(model.parameters(), ref)), "l2"
        return extra


@register_method("wise_ft")
class WiseFT(LMArm):
    """WiSE-FT (card, "Arms compared"): θ = α·θ_ft + (1-α)·θ*; α = the smallest of `alphas` whose task
    VALIDATION exact match is within `tolerance` of the best (harness choice of criterion; never the test split).
    The criterion sees only the task, so it picks α = 1 whenever interpolation costs validation EM."""
    Params = WiseParams

    def finish(self, model, task, metrics):
        ft = {k: v.detach().clone() for k, v in model.state_dict().items()}
        orig = self.orig.state_dict()
        val: dict[float, float] = {}
        for a in sorted(set(self.params.alphas)):
            model.load_state_dict({k: a * ft[k] + (1 - a) * orig[k] if ft[k].is_floating_point() else ft[k]
                                   for k in ft})
            val[a] = task_metrics(model, self.tok, task["val"], self.ctx.device)["em"]
            self.ctx.log({"alpha": a, "task_val_em": val[a]})
        best = max(val.values())
        alpha = min(a for a, em in val.items() if em >= best - self.params.tolerance)
        model.load_state_dict({k: alpha * ft[k] + (1 - alpha) * orig[k] if ft[k].is_floating_point() else ft[k]
                               for k in ft})
        metrics["wise_alpha"] = alpha
        return model
