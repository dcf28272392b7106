"""Evaluation programs: ``reproduce`` (Tables 2-5, figures), ``compare_learned``,
``optimality_gap`` and ``sweep``; configs in ``configs/``."""
