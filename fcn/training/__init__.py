"""Training: ``fit(cfg)`` in loop (setup -> train), the run's state, checkpoints and resume (state),
the run directory a new run may write into (rundir), evaluation during training (validate), the
losses, the weights' moving average (ema), the preemption signals (preemption), the experiment
trackers (trackers: TensorBoard, MLflow, W&B) and tune.py's Optuna search (search).

Stands on fcn.config, fcn.core, fcn.data and fcn.models; never imports fcn.inference (its peer), nor
the front ends above. Nothing is imported here: ``from fcn.training import loop`` pulls torch."""
