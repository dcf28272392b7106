"""Training programs: train one learner (``run``), train the shipped checkpoints
(``shipped``), learning curves (``curves``); one TOML config per learner in ``configs/``."""
