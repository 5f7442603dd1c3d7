"""aigrid: an inference grid."""
__version__ = "0.1.0"
