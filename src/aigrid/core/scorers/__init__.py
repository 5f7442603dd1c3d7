"""The five axes. Each scorer maps one eligible endpoint to [0, 1], higher is better."""
