"""tito: the TinyTorch command line (export, tests, the learner's journey)."""
__version__ = "0.1.0"
