"""The pure-functional MEC environment (no learning code here)."""

from mecjax.env.env import (advance, check_decision, device_view, evaluate, evaluate_arrays,
                            observe, repair_shares, reset, reset_from_noise, reset_noise,
                            reset_where, sanitize_decision, server_view, step, step_noise,
                            transition)
from mecjax.env.types import Decision, EnvState, Observation, Outcome

__all__ = [
    "Decision", "EnvState", "Observation", "Outcome", "advance", "check_decision",
    "device_view", "evaluate", "evaluate_arrays", "observe", "repair_shares", "reset",
    "reset_from_noise", "reset_noise", "reset_where", "sanitize_decision", "server_view", "step",
    "step_noise", "transition",
]
