"""Learners: jitted training of the learned schedulers (PureJaxRL style).

Look a learner up with :func:`mecjax.learners.base.get_learner`; its module
is imported then (nothing here is imported for registration's sake).
"""
