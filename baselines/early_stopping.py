"""early_stopping: the single checkpoint of the base run with the best validation accuracy (the first control a
reviewer asks of any checkpoint-selecting method: KF only matters where it beats this)."""
from __future__ import annotations

import torch

from bench.method import Method, MethodResult, RunContext, register_method
from bench.protocol import ProtocolParams, accuracy, protocol_splits


def best_epoch(probs_sel: torch.Tensor, y_sel: torch.Tensor) -> int:
    """0-based epoch whose softmax [E, N, C] is most accurate on (probs_sel, y_sel); ties go to the earliest."""
    acc = (probs_sel.argmax(-1) == y_sel[None]).float().mean(-1)
    return int(torch.argmax(acc))


@register_method("early_stopping")
class EarlyStopping(Method):
    """Early stopping (a control, not a method of the papers): on each protocol split, the epoch with the best
    accuracy on the same validation data KF selects from (Forget Me Not card section 1's V), scored on the same
    evaluation half; needs train.record_predictions."""
    Params = ProtocolParams

    def run(self, ctx: RunContext) -> MethodResult:
        p: ProtocolParams = self.params
        base = ctx.base_run()
        splits = protocol_splits(p.protocol, ctx.data, p.n_splits, ctx.config.dataset.seed)
        test, y_test = base.probs("test"), ctx.data.test.y.cpu()
        sel_probs = {"test": test}
        if splits[0].sel_split == "val":
            sel_probs["val"] = base.probs("val")
        y = {"test": y_test, "val": ctx.data.val.y.cpu()}
        epochs, accs = [], []
        for s in splits:
            e = best_epoch(sel_probs[s.sel_split][:, s.sel_idx], y[s.sel_split][s.sel_idx])
            epochs.append(e + 1)
            accs.append(accuracy(test[e][s.eval_idx], y_test[s.eval_idx]))
        return MethodResult(metrics={"test_acc": sum(accs) / len(accs), "test_acc_splits": accs,
                                     "best_epoch": epochs, "epochs": base.epochs, "protocol": p.protocol})
