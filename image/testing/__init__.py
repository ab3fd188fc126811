"""Builders of tiny random checkpoints of every image family (the real classes at test sizes), for tests and
``mmaccel bench families``."""
