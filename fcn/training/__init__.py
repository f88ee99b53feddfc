"""Training: ``fit(cfg)`` in loop (setup -> train), the run's state, checkpoints and resume (state),
the run directory a new run may write into (rundir), evaluation during training (validate), the
losses, the weights' moving average (ema) and the preemption signals (preemption).

Stands on fcn.config, fcn.core, fcn.data and fcn.models; never imports fcn.inference (its peer), nor
the front ends above. Nothing is imported here: ``from fcn.training import loop`` pulls torch."""
