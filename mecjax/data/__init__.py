"""Data files shipped with mecjax (read with ``importlib.resources``, never from a checkout path).

- ``eua/``: the EUA Melbourne CBD dataset (base-station sites and user positions), MIT licence;
  see ``eua/README.md`` and ``docs/topology.md``. Read it through :mod:`mecjax.topology`.
"""
