"""Real infrastructure as local processes: test fixtures and the honcho-run local stack."""
