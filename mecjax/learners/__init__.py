"""Learners: jitted training of the learned schedulers (PureJaxRL style)."""
