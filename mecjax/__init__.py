"""mecjax: a JAX-accelerated, vectorized benchmark for adaptive task offloading in MEC."""

from mecjax.config import EnvParams, Scenario, as_params

__version__ = "0.1.0"
__all__ = ["EnvParams", "Scenario", "as_params", "__version__"]
