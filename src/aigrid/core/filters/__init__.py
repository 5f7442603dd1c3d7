"""Hard constraints. A filter never weighs: an endpoint passes or is rejected with a reason."""
