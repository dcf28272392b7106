"""The digital twin's forecaster: a per-device LSTM (paper section 3.4, eq. 21).

One LSTM cell with ``hidden`` units is applied to every device independently
(the devices are the batch axis, parameters shared), so one network serves
any number of devices N; it is tied to the number of servers M only through
its input and output widths.

Input per device and slot t, F = 2M + 4 features (:func:`feature_vector`):

    [D^t scaled, C^t scaled, gdB(h^{t-1})_1..M, gdB(path gain)_1..M, sin, cos]

with task bits D and cycles C scaled to [0, 1] by their ranges, gains in
scaled dB ``gdB`` (:func:`mecjax.env.features.scaled_db`, as in every
learner's device state) and the known clock sin / cos(2 pi t / load_period_slots).

Output per device, 2 + M values: the next slot's scaled task bits and cycles
(D^{t+1}, C^{t+1}) and the current slot's scaled-dB channel gdB(h^t) to each
server. The Dense head outputs a *residual over persistence*: the output is
the first 2 + M input features (the current task and the delayed channel
h^{t-1}) plus the head, whose weights start at zero, so an untrained
forecaster is exactly the persistence (last-value) forecast.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def n_features(n_servers: int) -> int:
    """F = 2M + 4 input features per device."""
    return 2 * n_servers + 4


def feature_vector(bits_s, cycles_s, gain_db, path_db, t, period):
    """[N, F] forecaster input from scaled tasks [N], scaled-dB observed gain and
    path gain [N, M] and the slot index ``t`` (scalar) of the load period."""
    n = bits_s.shape[0]
    angle = 2.0 * jnp.pi * jnp.asarray(t, jnp.float32) / period
    clock = jnp.broadcast_to(jnp.stack([jnp.sin(angle), jnp.cos(angle)]), (n, 2))
    return jnp.concatenate([bits_s[:, None], cycles_s[:, None], gain_db, path_db, clock],
                           -1).astype(jnp.float32)


class Forecaster(nn.Module):
    """LSTM + residual Dense head; ``__call__(carry, x [..., F]) -> (carry, y [..., 2 + M])``.

    ``carry`` is the LSTM's ``(c, h)``, leaves ``[..., hidden]``; the head reads
    ``[h, x]`` and adds its output to the persistence forecast ``x[..., :2 + M]``.
    """

    n_servers: int
    hidden: int = 32

    @nn.compact
    def __call__(self, carry, x):
        carry, h = nn.OptimizedLSTMCell(self.hidden, name="lstm")(carry, x)
        residual = nn.Dense(2 + self.n_servers, kernel_init=nn.initializers.zeros,
                            bias_init=nn.initializers.zeros, name="head")(
            jnp.concatenate([h, x], -1))
        return carry, x[..., :2 + self.n_servers] + residual

    def zero_carry(self, batch_shape):
        """Zero LSTM carry ``(c, h)``, leaves ``[*batch_shape, hidden]``."""
        z = jnp.zeros(tuple(batch_shape) + (self.hidden,), jnp.float32)
        return (z, z)

    @staticmethod
    def from_params(net_params) -> "Forecaster":
        """The module whose parameters these are (sizes read from the head's kernel [H + F, 2 + M])."""
        rows, out = net_params["head"]["kernel"].shape
        m = out - 2
        return Forecaster(n_servers=m, hidden=rows - n_features(m))


__all__ = ["Forecaster", "feature_vector", "n_features"]
