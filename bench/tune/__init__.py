"""`forgetbench tune SPEC`: optuna search over a spec's `tune:` section, on the VALIDATION split only.

```yaml
tune:
  params:                               # dotted run paths -> search space (the spec's first run is the base)
    train.optimizer.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
    train.batch_size: {type: int, low: 32, high: 128, step: 32}
    train.optimizer.name: {type: categorical, choices: [sgd, adamw]}
  metric: val_acc                       # val_acc | val_loss (reported after every epoch)
  direction: maximize                   # maximize | minimize (default: maximize for val_acc, minimize for val_loss)
  n_trials: 20                          # exactly this many trials (pruned and failed ones count; trials lost
                                        # with a killed worker are marked FAIL and replaced)
  sampler: {name: tpe, seed: 0, n_startup_trials: 10, multivariate: false, constant_liar: true}  # | random
  pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1}              # | none
  storage: null                         # default: sqlite in RESULTS/<spec>/tune/ for one worker, a journal file
                                        # there for several; journal:PATH; or an RDB URL (postgresql://...)
  workers: 1                            # parallel workers sharing the study
  executor: local                       # local (processes) | slurm | submitit-local (one job per worker)
  study_name: null                      # default: the spec name
```

Each trial trains the base model through the engine primitives (`load_splits`, `init_model`, `fit`) with a hook
that reports the validation metric every epoch (`trial.report`) and raises `optuna.TrialPruned` when the pruner
says so. The test split is dropped right after loading and never evaluated. Workers take trials with
`study.ask()` under a file lock (so the study gets exactly `n_trials`, numbered by the storage), and record their
host/pid (and SLURM job); at every ask, RUNNING trials whose worker is dead are marked FAIL (`stale`) so they are
neither left RUNNING forever nor counted. Results: `RESULTS/<spec>/tune/best.json` (best value and params, and
the `--set` overrides to apply them) and `tune.json` (storage, study, settings) for `forgetbench status`.

Modules by job: `config` (the `tune:` section), `study` (optuna glue), `objective` (one trial), `workers` (the
ask/tell loop), `launch` (the command, local or submitit), `status` (studies in a store).
"""
