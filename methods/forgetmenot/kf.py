"""Knowledge Fusion: kf_i (one iteration) and kf_inf (iterated), from one base training run."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bench.config import in_range
from bench.forgetting import history_with_forget_fraction
from bench.method import Method, MethodResult, RunContext, register_method
from bench.protocol import ProtocolParams, protocol_splits, score_on_splits
from methods.forgetmenot.selection import kf_select, mix


@dataclass
class KFParams(ProtocolParams):
    window: int = field(default=1, metadata=in_range(0))   # checkpoints A-w..A+w around the forget peak A



class KnowledgeFusion(Method):
    """Forget Me Not card section 2 (KF, predecessor Alg. 1): A = argmax_e F_e, softmax of checkpoints A-w..A+w
    mixed with the final model by eps tuned on V; selection reads V only, the test half is scored once."""
    Params = KFParams
    iterate = False

    def run(self, ctx: RunContext) -> MethodResult:
        p: KFParams = self.params
        base = ctx.base_run()
        history, _ = history_with_forget_fraction(base, ctx.data)
        for row in history:
            ctx.log(row)
        t0 = time.perf_counter()
        probs = {"test": base.probs("test")}
        y = {"test": ctx.data.test.y.cpu()}
        splits = protocol_splits(p.protocol, ctx.data, p.n_splits, ctx.config.dataset.seed)
        if splits[0].sel_split == "val":
            probs["val"], y["val"] = base.probs("val"), ctx.data.val.y.cpu()
        fused, selections = [], []
        for s in splits:
            sel_probs = probs[s.sel_split][:, s.sel_idx]
            sel = kf_select(sel_probs, y[s.sel_split][s.sel_idx], window=p.window, iterate=self.iterate)
            selections.append(sel)
            fused.append((s, mix(probs["test"][sel.members], probs["test"][-1], sel.eps)))
        # each split's fused prediction is scored on that split's evaluation half only
        per_split = [score_on_splits(f, y["test"], [s]) for s, f in fused]
        naive = score_on_splits(probs["test"][-1], y["test"], splits)
        metrics = {
            "test_acc": float(np.mean([m["test_acc"] for m in per_split])),
            "test_acc_splits": [m["test_acc"] for m in per_split],
            "test_nll": float(np.mean([m["test_nll"] for m in per_split])),
            "naive_test_acc": naive["test_acc"],  # the same final model scored on the same halves
            "protocol": p.protocol,
            # the forget-fraction curve KF selects from: a random half of test (test_half) or the held-out val split
            "selected_on": "test half (V), scored on the other half" if splits[0].sel_split == "test" else
                           "validation split, scored on the full test set",
            "peak_epoch": [s.peak_epoch + 1 for s in selections],          # 1-based epochs
            "members": [[e + 1 for e in s.members] for s in selections],
            "eps": [s.eps for s in selections],
            "sel_acc": [s.val_acc for s in selections],
            "iterations": [s.iterations for s in selections],
        }
        return MethodResult(metrics=metrics, timings={"base_train_s": base.wall_time_s,
                                                      "kf_select_s": time.perf_counter() - t0})


@register_method("kf_i")
class KFOneIteration(KnowledgeFusion):
    """KF (i), Forget Me Not card section 2 steps 1-3: one fusion step around the forget peak."""
    iterate = False


@register_method("kf_inf")
class KFIterated(KnowledgeFusion):
    """KF (inf), Forget Me Not card section 2 step 4: add checkpoints while V accuracy improves."""
    iterate = True
