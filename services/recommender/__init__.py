"""RecommenderService: serves the MLflow champion model with a Redis cache and fresh history."""
