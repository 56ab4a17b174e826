"""The file MLflow runs to load a logged lambdaopt model ("models from code": nothing pickled)."""
from mlflow.models import set_model

from lambdaopt.mlflow_model import TopKRecommender

set_model(TopKRecommender())
