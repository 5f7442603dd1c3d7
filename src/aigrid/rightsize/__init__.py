"""Right-sized models: estimate per prompt whether a smaller model answers well, and evaluate routers."""
