"""averaged_kf: the KF checkpoints' weights averaged (BatchNorm statistics re-estimated on the training data)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.protocol import ProtocolParams, accuracy, protocol_splits
from methods.forgetmenot.selection import kf_select
from bench.method import Method, MethodResult, RunContext, register_method
from bench.stages import build_model_for
from bench.train import average_states, predict, recompute_bn


@dataclass
class AveragedKFParams(ProtocolParams):
    window: int = 1
    iterate: bool = False   # select like kf_inf instead of kf_i
    n_splits: int = 1       # one selection (split 0), like distilled KF


@register_method("averaged_kf")
class AveragedKF(Method):
    """Forget Me Not Table II row "averaged KF": the selected checkpoints and the final model, weights averaged
    uniformly (eps is not used: weight space has no mixing weight in the card), BatchNorm recomputed on train."""
    Params = AveragedKFParams

    def run(self, ctx: RunContext) -> MethodResult:
        p: AveragedKFParams = self.params
        base = ctx.base_run()
        splits = protocol_splits(p.protocol, ctx.data, p.n_splits, ctx.config.dataset.seed)
        y_test = ctx.data.test.y.cpu()
        accs, members_all = [], []
        for s in splits:
            y_sel = (ctx.data.val.y if s.sel_split == "val" else ctx.data.test.y).cpu()[s.sel_idx]
            sel = kf_select(base.probs(s.sel_split)[:, s.sel_idx], y_sel, window=p.window, iterate=p.iterate)
            epochs = [e + 1 for e in sel.members] + [base.epochs]
            model = build_model_for(ctx)
            model.load_state_dict(average_states([base.state(e) for e in epochs]))
            recompute_bn(model, ctx.data.train, batch_size=ctx.config.train.eval_batch_size)
            probs = predict(model, ctx.data.test, batch_size=ctx.config.train.eval_batch_size).softmax(-1).cpu()
            accs.append(accuracy(probs[s.eval_idx], y_test[s.eval_idx]))
            members_all.append(epochs)
        return MethodResult(metrics={"test_acc": sum(accs) / len(accs), "test_acc_splits": accs,
                                     "members": members_all, "protocol": p.protocol})
