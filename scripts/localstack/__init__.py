"""Real infrastructure as local processes: test fixtures and the supervised local stack."""
