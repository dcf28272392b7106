"""The pure-functional MEC environment (no learning code here)."""

from mecjax.env.env import (advance, check_decision, evaluate, evaluate_arrays, observe,
                            queues_after, repair_shares, reset, reset_from_noise, reset_noise,
                            reset_where, sanitize_decision, step, step_noise, transition)
from mecjax.env.features import device_features, scaled_db, server_features
from mecjax.env.types import Decision, EnvState, Observation, Outcome

__all__ = [
    "Decision", "EnvState", "Observation", "Outcome", "advance", "check_decision",
    "device_features", "evaluate", "evaluate_arrays", "observe", "queues_after",
    "repair_shares", "reset",
    "reset_from_noise", "reset_noise", "reset_where", "sanitize_decision", "scaled_db",
    "server_features", "step", "step_noise", "transition",
]
