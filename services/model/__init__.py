"""The contract between training and serving, mirroring `recsys.model.v1`.

The trainer writes what this package describes (the artifact file, a version's tags in the
MLflow registry); the recommender reads it. It imports only services.core, numpy, requests
and the generated contracts: never a service package, torch or mlflow, so the recommender's
image carries neither the trainer nor MLflow's client.
"""
